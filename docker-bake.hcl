# docker buildx bake definitions. `just image-service` builds for the local
# engine; `just image-service-release` pushes a tag with the crate version.

variable "PLATFORM" {
  default = "linux/amd64"
}

variable "REPOSITORY" {
  default = "ghcr.io/kache-rs/kache-service"
}

variable "TAG" {
  default = "dev"
}

group "default" {
  targets = ["service"]
}

target "service" {
  context    = "."
  dockerfile = "docker/service.Dockerfile"
  platforms  = [PLATFORM]
  tags       = ["${REPOSITORY}:${TAG}"]
}

target "service-release" {
  inherits = ["service"]
  tags     = ["${REPOSITORY}:${TAG}", "${REPOSITORY}:latest"]
}
