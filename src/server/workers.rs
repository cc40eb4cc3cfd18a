//! Per-core workers: one OS thread per worker, each running its own single-threaded tokio
//! runtime that accepts on every provider listener and owns its own upstream connection pools.
//! A request is served start to end on one thread (its client connection, its upstream h2
//! connection, its body), so the request path makes no cross-thread wake-ups; the kernel hands
//! each new connection to whichever worker accepts it first.

use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::plan::Limits;
use crate::proxy::endpoints::Directory;
use crate::proxy::{self, Route};
use crate::server::admission::Admission;
use crate::server::listener::{self, DrainHandle};

/// Threads each worker may start for blocking work (decompressing a response to read its token
/// usage): a few, so threads stay well inside a container's pids limit on a many-core host.
const BLOCKING_THREADS: usize = 2;

pub use crate::config::default_workers as default_count;

/// One provider listener, as every worker accepts on it.
pub struct Listening {
    pub listener: StdListener,
    pub route: Arc<Route>,
    /// Every route, for the AWF `/health` and `/reflect` answers.
    pub directory: Arc<Directory>,
    /// `limits.max_connections` for this listener, shared by all workers.
    pub admission: Admission,
    pub name: String,
}

/// The running workers; `stop` ends them (after the drain).
pub struct Workers {
    threads: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Workers {
    /// Starts `count` workers, each serving every listener in `listening` until drained.
    pub fn start(
        count: usize,
        listening: &[Listening],
        drain: impl Fn() -> DrainHandle,
        limits: Limits,
    ) -> Result<Workers, String> {
        let (stop, stop_rx) = watch::channel(false);
        let mut workers = Workers {
            threads: Vec::with_capacity(count),
            stop,
        };
        for index in 0..count {
            let mut mine = Vec::with_capacity(listening.len());
            for l in listening {
                let listener = l
                    .listener
                    .try_clone()
                    .map_err(|e| format!("cannot share the {} listener: {e}", l.name))?;
                mine.push((
                    listener,
                    (l.route.clone(), l.directory.clone()),
                    l.admission.clone(),
                    l.name.clone(),
                ));
            }
            let handle = drain();
            let mut stop_rx = stop_rx.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(BLOCKING_THREADS)
                .build()
                .map_err(|e| format!("cannot start worker {index}'s runtime: {e}"))?;
            let thread = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    crate::upstream::pool::set_worker(index);
                    runtime.block_on(async move {
                        for (listener, (route, directory), admission, name) in mine {
                            let listener = match TcpListener::from_std(listener) {
                                Ok(l) => l,
                                Err(e) => {
                                    tracing::error!(event = "accept_error", listener = name.as_str(), error = %e);
                                    continue;
                                }
                            };
                            tokio::spawn(listener::serve(
                                listener,
                                move || {
                                    let (route, directory) = (route.clone(), directory.clone());
                                    hyper::service::service_fn(move |req| {
                                        proxy::handle(route.clone(), directory.clone(), req)
                                    })
                                },
                                handle.clone(),
                                name,
                                limits,
                                admission,
                            ));
                        }
                        drop(handle);
                        let _ = stop_rx.wait_for(|s| *s).await;
                    });
                    // Dropping the runtime here ends what is still open past the drain.
                })
                .map_err(|e| format!("cannot start worker thread {index}: {e}"))?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Ends every worker (open connections are closed) and waits for their threads.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}
