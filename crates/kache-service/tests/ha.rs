//! Leader election against a loopback stand-in for the Kubernetes API server.
//!
//! No API server can run on this machine, so `LeaseApi` below serves
//! `coordination.k8s.io/v1` Leases over HTTP the way the API server does for
//! the verbs leader election uses (get, create, replace): resource versions
//! go up on every write and a replace carrying a stale `resourceVersion` is
//! refused with 409 Conflict. The service talks to it through its production
//! Kubernetes client (kube-rs via kunobi-ha), configured by a kubeconfig.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::Service;
use serde_json::{Value, json};

/// The stand-in's store.
#[derive(Default)]
struct Leases {
    objects: Mutex<HashMap<(String, String), Value>>,
    version: AtomicU64,
    /// When non-zero, every n-th replace first bumps the stored version, as
    /// a concurrent writer would, so the replace is refused as stale.
    conflict_every: AtomicU64,
    replaces: AtomicU64,
    conflicts: AtomicU64,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()
    });
    (code, Json(body)).into_response()
}

async fn get_lease(
    State(s): State<Arc<Leases>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    match s.objects.lock().unwrap().get(&(ns, name.clone())) {
        Some(lease) => Json(lease.clone()).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("leases \"{name}\" not found"),
        ),
    }
}

async fn create_lease(
    State(s): State<Arc<Leases>>,
    UrlPath(ns): UrlPath<String>,
    Json(mut lease): Json<Value>,
) -> Response {
    let name = lease["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut objects = s.objects.lock().unwrap();
    if objects.contains_key(&(ns.clone(), name.clone())) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("leases \"{name}\" already exists"),
        );
    }
    let version = s.version.fetch_add(1, Ordering::SeqCst) + 1;
    lease["metadata"]["resourceVersion"] = json!(version.to_string());
    lease["metadata"]["namespace"] = json!(ns.clone());
    lease["apiVersion"] = json!("coordination.k8s.io/v1");
    lease["kind"] = json!("Lease");
    objects.insert((ns, name), lease.clone());
    (StatusCode::CREATED, Json(lease)).into_response()
}

async fn replace_lease(
    State(s): State<Arc<Leases>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Json(mut lease): Json<Value>,
) -> Response {
    let mut objects = s.objects.lock().unwrap();
    let Some(stored) = objects.get_mut(&(ns.clone(), name.clone())) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("leases \"{name}\" not found"),
        );
    };
    let n = s.replaces.fetch_add(1, Ordering::SeqCst) + 1;
    let every = s.conflict_every.load(Ordering::SeqCst);
    if every > 0 && n % every == 0 {
        let bumped = s.version.fetch_add(1, Ordering::SeqCst) + 1;
        stored["metadata"]["resourceVersion"] = json!(bumped.to_string());
    }
    if lease["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
        s.conflicts.fetch_add(1, Ordering::SeqCst);
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            "Operation cannot be fulfilled on leases.coordination.k8s.io: the object has been modified",
        );
    }
    let version = s.version.fetch_add(1, Ordering::SeqCst) + 1;
    lease["metadata"]["resourceVersion"] = json!(version.to_string());
    lease["apiVersion"] = json!("coordination.k8s.io/v1");
    lease["kind"] = json!("Lease");
    *stored = lease.clone();
    Json(lease).into_response()
}

/// Starts the stand-in on a loopback port, on its own runtime thread.
fn start_lease_api() -> (SocketAddr, Arc<Leases>) {
    let leases = Arc::new(Leases::default());
    let state = leases.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = Router::new()
                .route(
                    "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                    get(get_lease).put(replace_lease),
                )
                .route(
                    "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                    post(create_lease),
                )
                .with_state(state);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (rx.recv().unwrap(), leases)
}

fn kubeconfig(dir: &Path, addr: SocketAddr) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n\
         current-context: standin\nusers:\n- name: standin\n  user: {{}}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn ha_service(dir: &Path, name: &str, config: &Path) -> Service {
    let db = dir.join(format!("{name}.db"));
    let mut cmd = common::command(
        &db,
        &[
            "--ha-enabled",
            "--ha-lease-name",
            "planner-lease",
            "--planner-name",
            name,
        ],
    );
    cmd.env("KUBECONFIG", config)
        .env("POD_NAMESPACE", "kache")
        .env("HOSTNAME", "same-host");
    Service::spawn(cmd)
}

fn holder(leases: &Leases) -> Option<String> {
    let objects = leases.objects.lock().unwrap();
    objects
        .get(&("kache".to_string(), "planner-lease".to_string()))
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
}

#[test]
fn one_of_two_instances_leads_and_the_other_takes_over_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, leases) = start_lease_api();
    let config = kubeconfig(dir.path(), addr);

    let first = ha_service(dir.path(), "first", &config);
    assert_eq!(first.get("/healthz").status, 200);
    assert!(
        first.wait_ready(200, Duration::from_secs(30)),
        "the first instance leads: {}",
        first.logs()
    );
    let second = ha_service(dir.path(), "second", &config);
    assert_eq!(second.get("/healthz").status, 200, "a follower is healthy");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(second.get("/readyz").status, 503, "a follower is not ready");
    let plan = second.post("/v2/prefetch-plan", "{}", None);
    assert_eq!(plan.status, 503, "a follower does not plan");
    assert!(
        second
            .get("/metrics")
            .body
            .contains("kache_planner_ready 0")
    );
    let leader = holder(&leases).expect("the lease has a holder");
    assert!(leader.starts_with("same-host-"), "{leader}");

    assert_eq!(first.stop(), 0);
    assert!(
        second.wait_ready(200, Duration::from_secs(30)),
        "the standby takes over: {}",
        second.logs()
    );
    assert_ne!(holder(&leases).unwrap(), leader);
    assert_eq!(second.post("/v2/prefetch-plan", "{}", None).status, 200);
}

#[test]
fn stale_resource_versions_are_retried_and_leadership_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, leases) = start_lease_api();
    leases.conflict_every.store(2, Ordering::SeqCst);
    let config = kubeconfig(dir.path(), addr);
    let service = ha_service(dir.path(), "only", &config);
    assert!(
        service.wait_ready(200, Duration::from_secs(30)),
        "{}",
        service.logs()
    );
    // Several renewals later, with every second one refused as stale, the
    // instance is still the ready leader.
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        leases.conflicts.load(Ordering::SeqCst) >= 1,
        "the stand-in refused stale writes"
    );
    assert_eq!(service.get("/readyz").status, 200, "{}", service.logs());
}

#[test]
fn losing_the_lease_makes_the_instance_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, leases) = start_lease_api();
    let config = kubeconfig(dir.path(), addr);
    let service = ha_service(dir.path(), "victim", &config);
    assert!(
        service.wait_ready(200, Duration::from_secs(30)),
        "{}",
        service.logs()
    );
    {
        // Another replica takes the lease over (a fresh renewal by someone else).
        let mut objects = leases.objects.lock().unwrap();
        let lease = objects
            .get_mut(&("kache".to_string(), "planner-lease".to_string()))
            .unwrap();
        lease["spec"]["holderIdentity"] = json!("intruder");
        lease["spec"]["renewTime"] = json!(chrono_now());
        let version = leases.version.fetch_add(1, Ordering::SeqCst) + 1;
        lease["metadata"]["resourceVersion"] = json!(version.to_string());
    }
    assert!(
        service.wait_ready(503, Duration::from_secs(30)),
        "{}",
        service.logs()
    );
    assert_eq!(service.post("/v2/prefetch-plan", "{}", None).status, 503);
    assert!(
        service.logs().contains("lost leadership"),
        "{}",
        service.logs()
    );
}

/// RFC 3339 with microseconds, as Kubernetes MicroTime expects.
fn chrono_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Days since 1970-01-01 to a (year, month, day) civil date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
