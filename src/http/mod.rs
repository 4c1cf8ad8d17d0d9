//! The HTTP listener: an accept loop, a thread per connection that does all of its network
//! I/O, and a bounded pool of workers that only ever see requests read in full and never touch
//! a socket. No client, however slow or malformed, can hold a worker, grow memory without
//! bound, or take the process down.
//!
//! - The accept thread counts open connections; past `EDGECRON_HTTP_MAX_CONNECTIONS` it writes
//!   a 503 without waiting and closes. An `accept` error (EMFILE, say) is waited out, never
//!   fatal.
//! - Each admitted connection gets a thread with a small stack (the connection limit bounds
//!   how many; one that has served a connection waits a while for the next, since starting a
//!   thread is slowest when the cores are busy). It reads the request by the rules of
//!   `wire/` (head within 10 s and 64 KiB, body within 30 s and 1 MiB, strict framing),
//!   refusing it there when it breaks one; then queues it for a worker, waits for the reply
//!   and writes it within 10 s. Idle, slow and never-reading clients therefore cost a parked
//!   thread and their bytes, never a worker.
//! - The workers (`EDGECRON_HTTP_WORKERS` plus one per job) take requests from a queue bounded
//!   by the connection limit. A job never overlaps itself, so running triggers hold at most one
//!   worker per job and the configured number always remain for `/healthz` and the rest.
//! - A worker calls the handler behind `catch_unwind`: a panic answers 500 and the worker
//!   lives on.
//! - One request per connection (every response says `Connection: close`): nothing is left on
//!   a connection for a second, smuggled request to hide in.
//! - On shutdown the listener keeps answering, 503 to every new request, while running jobs
//!   drain and their responses are delivered.

mod admission;
mod auth;
mod dsar;
mod html;
mod prometheus;
mod routes;
mod status_page;
mod strip;
mod wire;

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use admission::App;
pub use auth::{Auth, resolve_cron_secrets};

use crate::shutdown::Shutdown;
use wire::{HEAD_TIMEOUT, ReadError, Reply, Request};

/// A connection thread only parses and copies bytes: a small stack keeps a thousand cheap.
const CONNECTION_STACK_BYTES: usize = 128 * 1024;
/// How long a connection thread waits for another connection before it ends.
const SPARE_KEEP: Duration = Duration::from_secs(10);
/// At most this many connection threads wait for a connection; more end at once.
const MAX_SPARES: usize = 64;
/// How long the accept loop waits when the process is out of file descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How many requests the listener works on at once.
#[derive(Debug, Clone, Copy)]
struct Capacity {
    workers: usize,
    max_connections: usize,
}

/// The running listener, for the shutdown sequence.
pub struct Listener {
    in_flight: Arc<AtomicUsize>,
}

impl Listener {
    /// Waits until every request handed to a worker has had its response written, at most
    /// `limit`; answers whether all have.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

/// Starts answering `app`'s routes on `listener` until the process exits.
pub fn start(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: Arc<Shutdown>,
) -> io::Result<Listener> {
    let config = &app.config;
    let capacity = Capacity {
        workers: config.http_workers + app.jobs.names().len(),
        max_connections: fit_to_open_file_limit(
            config.http_max_connections,
            descriptors_for_jobs(config.export_parallelism),
        ),
    };
    let gate_app = Arc::clone(&app);
    let gate: Gate = Arc::new(move |head: &Request| routes::gate(&gate_app, head));
    let handler: Handler = Arc::new(move |request: &Request| routes::handle(&app, request));
    serve(listener, handler, gate, shutdown, capacity)
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;
/// Answers a request on its head alone, before its body is read (a refused authentication);
/// `None` lets it through.
type Gate = Arc<dyn Fn(&Request) -> Option<Reply> + Send + Sync>;

/// A request read in full, on its way to a worker; the reply goes back to its connection.
struct Work {
    request: Request,
    reply: SyncSender<Reply>,
}

/// What every connection thread shares.
struct Shared {
    queue: SyncSender<Work>,
    gate: Gate,
    spares: Spares,
    shutdown: Arc<Shutdown>,
    /// Requests queued or being answered, whose response is not written yet.
    in_flight: Arc<AtomicUsize>,
}

fn serve(
    listener: TcpListener,
    handler: Handler,
    gate: Gate,
    shutdown: Arc<Shutdown>,
    capacity: Capacity,
) -> io::Result<Listener> {
    // Each queued request has a connection waiting for it, so the connection limit bounds the
    // queue and it is never full.
    let (queue, requests) = std::sync::mpsc::sync_channel::<Work>(capacity.max_connections);
    let requests = Arc::new(Mutex::new(requests));
    for index in 0..capacity.workers {
        let (requests, handler) = (Arc::clone(&requests), Arc::clone(&handler));
        std::thread::Builder::new()
            .name(format!("http-{index}"))
            .spawn(move || work(&requests, &handler))?;
    }
    let in_flight = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(Shared {
        queue,
        gate,
        spares: Spares {
            state: Mutex::new(SpareState::default()),
            handed: Condvar::new(),
        },
        shutdown,
        in_flight: Arc::clone(&in_flight),
    });
    let connections = Arc::new(Connections::new(capacity.max_connections));
    std::thread::Builder::new()
        .name("http-accept".into())
        .spawn(move || accept(&listener, &shared, &connections))?;
    Ok(Listener { in_flight })
}

fn accept(listener: &TcpListener, shared: &Arc<Shared>, connections: &Arc<Connections>) {
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(error) => {
                wait_out_accept_error(&error);
                continue;
            }
        };
        let head_deadline = Instant::now() + HEAD_TIMEOUT;
        let Some(slot) = connections.open() else {
            Reply::error(503, "too many open connections").write_without_waiting(&mut stream);
            continue;
        };
        let admitted = Admitted {
            reading: connections.reading(&stream),
            _slot: slot,
            stream,
            head_deadline,
        };
        let Err(admitted) = shared.spares.hand(admitted) else {
            continue;
        };
        let shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("http-conn".into())
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                let mut next = Some(admitted);
                while let Some(admitted) = next {
                    let Admitted {
                        reading,
                        _slot,
                        mut stream,
                        head_deadline,
                    } = admitted;
                    connection(&mut stream, head_deadline, reading, &shared);
                    drop(_slot);
                    drop(stream);
                    next = shared.spares.next();
                }
            });
        if let Err(error) = spawned {
            log::warn!(
                "http: cannot start a connection thread ({error}); the connection is closed"
            );
        }
    }
}

/// An accepted connection within the limit, before its request is read.
struct Admitted {
    /// Dropped once the request is read: from then on the connection is not displaced.
    reading: Reading,
    /// Dropped (its place freed) just before the stream closes, so a client that has seen its
    /// connection close can count on its place being free.
    _slot: Slot,
    stream: TcpStream,
    head_deadline: Instant,
}

/// Connection threads waiting for another connection. Starting a thread per connection costs
/// most when the cores are busy (a new thread waits for its first slice), so a thread that
/// has served one waits here a while for the next, as a thread pool's would.
struct Spares {
    state: Mutex<SpareState>,
    handed: Condvar,
}

#[derive(Default)]
struct SpareState {
    waiting: usize,
    /// Never longer than `waiting`: a connection is only handed over to a thread that waits.
    connections: VecDeque<Admitted>,
}

impl Spares {
    /// Gives `admitted` to a waiting thread, or back when none waits.
    fn hand(&self, admitted: Admitted) -> Result<(), Admitted> {
        let mut state = lock(&self.state);
        if state.waiting <= state.connections.len() {
            return Err(admitted);
        }
        state.connections.push_back(admitted);
        self.handed.notify_one();
        Ok(())
    }

    /// The next connection for a thread that has finished one; `None` (the thread ends) after
    /// [`SPARE_KEEP`], or at once when [`MAX_SPARES`] already wait.
    fn next(&self) -> Option<Admitted> {
        let mut state = lock(&self.state);
        if state.waiting >= MAX_SPARES {
            return None;
        }
        state.waiting += 1;
        let deadline = Instant::now() + SPARE_KEEP;
        loop {
            // Checked before the deadline, so a thread never leaves a connection behind.
            if let Some(admitted) = state.connections.pop_front() {
                state.waiting -= 1;
                return Some(admitted);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.waiting -= 1;
                return None;
            }
            state = self
                .handed
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Out of file descriptors or memory: give connections a moment to close rather than spin;
/// anything else (a client that reset before `accept`) is passed over.
fn wait_out_accept_error(error: &io::Error) {
    let exhausted = matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    );
    if exhausted {
        log::warn!("http: accepting a connection failed ({error}); retrying shortly");
        std::thread::sleep(ACCEPT_BACKOFF);
    } else {
        log::debug!("http: accepting a connection failed: {error}");
        // Never a busy loop, whatever the error.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One connection's thread: read the request, have a worker answer it, write the reply.
fn connection(stream: &mut TcpStream, head_deadline: Instant, reading: Reading, shared: &Shared) {
    let read = wire::read_request(stream, head_deadline, shared.gate.as_ref());
    let evicted = reading.evicted.load(Ordering::SeqCst);
    drop(reading);
    if evicted && read.is_err() {
        Reply::error(
            503,
            "too many open connections: the one waiting longest for its request makes way",
        )
        .write_to(stream);
        return;
    }
    // The body's share of the budget is held until the reply is written.
    let (request, _permit) = match read {
        Ok(read) => read,
        Err(ReadError::Answered(reply)) => {
            reply.write_to(stream);
            wire::close_unread(stream);
            return;
        }
        Err(ReadError::Refused(refusal)) => {
            log::debug!("http: refused a request: {refusal}");
            Reply::error(refusal.status(), refusal).write_to(stream);
            // A body may follow the head it refused: closed without a reset.
            wire::close_unread(stream);
            return;
        }
        Err(ReadError::Gone(error)) => {
            log::debug!("http: a client left before its request was complete: {error}");
            return;
        }
    };
    if shared.shutdown.is_requested() {
        Reply::error(503, "shutting down").write_to(stream);
        return;
    }
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    let (reply_to, reply) = std::sync::mpsc::sync_channel(1);
    let answer = match shared.queue.try_send(Work {
        request,
        reply: reply_to,
    }) {
        // A worker that lost the request (it cannot: handlers run behind catch_unwind) drops
        // the sender, and the client still gets an answer.
        Ok(()) => reply
            .recv()
            .unwrap_or_else(|_| Reply::error(500, "internal error")),
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            Reply::error(503, "the listener is overloaded")
        }
    };
    answer.write_to(stream);
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
}

fn work(requests: &Mutex<Receiver<Work>>, handler: &Handler) {
    loop {
        let next = lock(requests).recv();
        let Ok(work) = next else {
            return;
        };
        let request = &work.request;
        let reply = catch_unwind(AssertUnwindSafe(|| handler(request))).unwrap_or_else(|_| {
            log::error!(
                "http: the handler of {} {} panicked; answered 500",
                request.method,
                request.path
            );
            Reply::error(500, "internal error")
        });
        // The connection may have gone; the reply then has no one to go to.
        let _ = work.reply.send(reply);
    }
}

/// The count of open connections, and its limit.
struct Connections {
    open: AtomicUsize,
    limit: usize,
    /// Connections still sending their request, by when they were accepted (oldest first):
    /// the ones a new connection may displace at the limit.
    reading: Mutex<BTreeMap<u64, (TcpStream, Arc<AtomicBool>)>>,
    accepted: AtomicU64,
}

impl Connections {
    fn new(limit: usize) -> Connections {
        Connections {
            open: AtomicUsize::new(0),
            limit,
            reading: Mutex::new(BTreeMap::new()),
            accepted: AtomicU64::new(0),
        }
    }

    /// A place for a new connection: a free one, or, at the limit, the place of the connection
    /// that has been sending its request longest (closed now: idle and trickling clients can
    /// hold the limit, never keep `/healthz` or a trigger out, and what they hold is cut
    /// rather than what arrives). `None` only when every connection has sent its request.
    fn open(self: &Arc<Self>) -> Option<Slot> {
        let free = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < self.limit).then_some(open + 1)
            })
            .is_ok();
        if !free {
            let (_, (oldest, evicted)) = lock(&self.reading).pop_first()?;
            // Its thread's read ends at once, it answers 503, and its place is freed as that
            // thread ends; the new connection takes it meanwhile.
            evicted.store(true, Ordering::SeqCst);
            let _ = oldest.shutdown(std::net::Shutdown::Read);
            self.open.fetch_add(1, Ordering::SeqCst);
        }
        Some(Slot(Arc::clone(self)))
    }

    /// Marks `stream` as still sending its request until the returned guard drops.
    fn reading(self: &Arc<Self>, stream: &TcpStream) -> Reading {
        let id = self.accepted.fetch_add(1, Ordering::SeqCst);
        let evicted = Arc::new(AtomicBool::new(false));
        if let Ok(clone) = stream.try_clone() {
            lock(&self.reading).insert(id, (clone, Arc::clone(&evicted)));
        }
        Reading {
            connections: Arc::clone(self),
            id,
            evicted,
        }
    }
}

/// A connection sending its request; dropped once it has (or has gone).
struct Reading {
    connections: Arc<Connections>,
    id: u64,
    /// Set when a new connection took its place.
    evicted: Arc<AtomicBool>,
}

impl Drop for Reading {
    fn drop(&mut self) {
        lock(&self.connections.reading).remove(&self.id);
    }
}

/// One open connection; dropping it (the connection closed) frees its place.
struct Slot(Arc<Connections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Descriptors kept for the jobs whatever clients hold: the store's pool (16 connections, each
/// with its file, WAL and shared memory), each export writer's open files (32 at most), and a
/// margin for logs, archives, staging and the sockets to storage, SIEM and webhooks.
fn descriptors_for_jobs(export_writers: usize) -> u64 {
    16 * 3 + 32 * export_writers as u64 + 64
}

/// Descriptors the process itself holds: standard streams, the listener, a few in passing.
const BASE_DESCRIPTORS: u64 = 16;
/// The fewest connections the listener keeps, however low the limit.
const MIN_CONNECTIONS: usize = 8;

/// Raises the soft open-file limit to the hard one, then answers how many connections fit
/// beside what the jobs need: `wanted`, or fewer (with a warning) when the limit is too low, so
/// idle clients can never take the descriptors a job's files need.
fn fit_to_open_file_limit(wanted: usize, for_jobs: u64) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    let current = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return wanted;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    let fitting = connections_within(current, for_jobs);
    if fitting >= wanted {
        return wanted;
    }
    log::warn!(
        "the open-file limit ({current}) holds {wanted} connections only by taking the {for_jobs} \
         descriptors kept for jobs: EDGECRON_HTTP_MAX_CONNECTIONS is lowered to {fitting} \
         (raise LimitNOFILE to keep it)"
    );
    fitting
}

/// Connections that fit in `limit` descriptors beside the jobs' and the process's own.
fn connections_within(limit: u64, for_jobs: u64) -> usize {
    let left = limit.saturating_sub(for_jobs + BASE_DESCRIPTORS);
    usize::try_from(left)
        .unwrap_or(usize::MAX)
        .max(MIN_CONNECTIONS)
}

#[cfg(test)]
mod tests;
