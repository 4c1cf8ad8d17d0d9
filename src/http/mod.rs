//! The HTTP listener: tiny_http's accept loop, a bounded pool of workers that answer requests,
//! and a supervisor that brings the accept loop back if it ever stops.
//!
//! Limits against slow or hostile clients (tiny_http 0.12 has no timeouts of its own):
//! - tiny_http reads each connection's request head on its own thread, so idle or half-sent
//!   connections never occupy a worker; a new client is answered however many are idle.
//! - The open-file limit is raised to its hard limit at start, so idle connections exhaust
//!   it far later; and if `accept` fails anyway (tiny_http's accept loop then ends), the
//!   next worker to notice starts a new accept loop on the same socket.
//! - Request heads over 64 KiB are refused with 431 and bodies over 1 MiB with 413.
//! - Documented, not enforced here: a client that sends its head and then trickles its body
//!   holds one worker until it is done. Keep the listener on loopback (the default) or
//!   behind a proxy with its own timeouts when untrusted clients can reach it.

mod auth;
mod prometheus;
mod routes;
mod status_page;

use std::io;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use auth::{Auth, resolve_cron_secrets};
pub use routes::App;

use crate::shutdown::Shutdown;

/// How often an idle worker looks up from `recv` to see whether shutdown was requested.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

type SharedServer = Arc<Mutex<Arc<tiny_http::Server>>>;

/// Starts the accept loop and `workers` worker threads; they stop when shutdown is requested.
pub fn start(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: Arc<Shutdown>,
    workers: usize,
) -> io::Result<Vec<JoinHandle<()>>> {
    raise_open_file_limit();
    let listener = Arc::new(listener);
    let server: SharedServer = Arc::new(Mutex::new(Arc::new(accept_loop(&listener)?)));
    (0..workers)
        .map(|index| {
            let (listener, server, app, shutdown) = (
                Arc::clone(&listener),
                Arc::clone(&server),
                Arc::clone(&app),
                Arc::clone(&shutdown),
            );
            std::thread::Builder::new()
                .name(format!("http-{index}"))
                .spawn(move || serve_requests(&listener, &server, &app, &shutdown))
        })
        .collect()
}

fn accept_loop(listener: &TcpListener) -> io::Result<tiny_http::Server> {
    tiny_http::Server::from_listener(listener.try_clone()?, None).map_err(io::Error::other)
}

fn serve_requests(listener: &TcpListener, server: &SharedServer, app: &App, shutdown: &Shutdown) {
    while !shutdown.is_requested() {
        let current = Arc::clone(&lock(server));
        match current.recv_timeout(POLL_INTERVAL) {
            Ok(Some(request)) => routes::handle(app, request),
            Ok(None) => {}
            Err(error) => restart_accept_loop(listener, server, &current, &error, shutdown),
        }
    }
}

/// tiny_http ends its accept loop on the first `accept` error (EMFILE under a flood of
/// connections, say); start a new one on the same socket so the listener lives on.
fn restart_accept_loop(
    listener: &TcpListener,
    server: &SharedServer,
    failed: &Arc<tiny_http::Server>,
    error: &io::Error,
    shutdown: &Shutdown,
) {
    log::error!("http: accepting connections failed ({error}); restarting the accept loop");
    // Give the cause (file descriptors, say) a moment to clear before trying again.
    shutdown.wait(Duration::from_millis(200));
    let mut current = lock(server);
    if !Arc::ptr_eq(&current, failed) {
        return;
    }
    match accept_loop(listener) {
        Ok(fresh) => *current = Arc::new(fresh),
        Err(error) => log::error!("http: restarting the accept loop failed: {error}"),
    }
}

fn lock(server: &SharedServer) -> std::sync::MutexGuard<'_, Arc<tiny_http::Server>> {
    server
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Each connection holds a file descriptor until it closes; the default soft limit (often
/// 1,024) would let a few hundred idle clients starve `accept`.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let wanted = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
            log::debug!(
                "open-file limit raised from {} to {}",
                limit.rlim_cur,
                limit.rlim_max
            );
        }
    }
}
