//! The daemon: one long-lived process per cache directory that owns
//! everything slow, so the wrapper stays a few milliseconds per hit.
//!
//! - [`protocol`]: requests and responses on `{cache_dir}/daemon.sock`;
//! - [`server`]: `kache daemon run` (lock, socket, dispatch, idle exit);
//! - [`state`]: what the server and its workers share (no circle: it
//!   imports none of them);
//! - [`client`]: what the wrapper and the CLI call, with deadlines;
//! - [`uploads`]: the durable upload queue;
//! - [`prefetch`]: remote hits on demand and prefetch at build start;
//! - [`planner`]: the planner client that prefetch asks first;
//! - [`peer`]: who is asking, and the caller's credentials, resolved here;
//! - [`feedback`]: what became of a plan's candidates, told to the planner.
//!
//! Architecture invariant: during a build only the daemon talks to the
//! network, and the wrapper never waits on it longer than a deadline.

pub mod client;
pub mod feedback;
pub mod peer;
pub mod planner;
pub mod prefetch;
pub mod protocol;
pub mod server;
pub mod state;
pub mod uploads;
