//! Tests of the listener: capacity, spare threads, the connection limit, workers that never
//! wait on a client.

use super::*;
use std::io::{Read, Write};

#[test]
fn connections_fit_beside_the_descriptors_kept_for_jobs() {
    // 256 descriptors, two export writers: 176 for jobs, 16 for the process, 64 left.
    assert_eq!(connections_within(256, descriptors_for_jobs(2)), 64);
    assert_eq!(
        connections_within(1 << 20, descriptors_for_jobs(2)),
        (1 << 20) - 192
    );
    assert_eq!(
        connections_within(64, descriptors_for_jobs(4)),
        MIN_CONNECTIONS
    );
}
use std::net::SocketAddr;

fn listen(handler: Handler, capacity: Capacity) -> (SocketAddr, Arc<Shutdown>, Listener) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = Arc::new(Shutdown::default());
    let running = serve(
        listener,
        handler,
        Arc::new(|_: &Request| None),
        Arc::clone(&shutdown),
        capacity,
    )
    .unwrap();
    (address, shutdown, running)
}

fn get(address: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A refused connection may be answered and closed before the request is written.
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}

#[test]
fn a_panicking_handler_answers_500_and_every_worker_lives_on() {
    let handler: Handler = Arc::new(|request: &Request| {
        assert!(request.path != "/panic", "a handler bug");
        Reply::json(200, &serde_json::json!({"path": request.path}))
    });
    let capacity = Capacity {
        workers: 2,
        max_connections: 16,
    };
    let (address, shutdown, listener) = listen(handler, capacity);
    for _ in 0..5 {
        assert!(get(address, "/panic").starts_with("HTTP/1.1 500 "));
    }
    assert!(get(address, "/fine").starts_with("HTTP/1.1 200 "));
    assert!(listener.wait_idle(Duration::from_secs(5)));
    shutdown.request();
    let draining = get(address, "/fine");
    assert!(draining.starts_with("HTTP/1.1 503 "), "{draining}");
    assert!(draining.contains("shutting down"), "{draining}");
}

#[test]
fn clients_that_never_read_their_response_hold_no_worker() {
    let handler: Handler = Arc::new(|request: &Request| {
        let size = if request.path == "/big" { 16 << 20 } else { 2 };
        Reply::text(200, "x".repeat(size), "text/plain")
    });
    let capacity = Capacity {
        workers: 1,
        max_connections: 16,
    };
    let (address, _shutdown, _listener) = listen(handler, capacity);
    let stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(address).unwrap();
            write!(stream, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            // Its response has started; the rest of it is never read.
            let mut first = [0u8; 1];
            stream.read_exact(&mut first).unwrap();
            stream
        })
        .collect();
    let started = Instant::now();
    assert!(get(address, "/small").starts_with("HTTP/1.1 200 "));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    drop(stalled);
}

#[test]
fn a_connection_goes_only_to_a_thread_that_waits_for_one() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let connections = Arc::new(Connections::new(4));
    let admit = || {
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        Admitted {
            reading: connections.reading(&stream),
            _slot: connections.open().unwrap(),
            stream,
            head_deadline: Instant::now(),
        }
    };
    let spares = Arc::new(Spares {
        state: Mutex::new(SpareState::default()),
        handed: Condvar::new(),
    });
    assert!(spares.hand(admit()).is_err(), "no thread waits yet");
    let waiting = {
        let spares = Arc::clone(&spares);
        std::thread::spawn(move || spares.next().is_some())
    };
    let started = Instant::now();
    while lock(&spares.state).waiting == 0 {
        assert!(started.elapsed() < Duration::from_secs(5));
        std::thread::yield_now();
    }
    assert!(spares.hand(admit()).is_ok());
    assert!(waiting.join().unwrap(), "the waiting thread got it");
    assert!(spares.hand(admit()).is_err(), "and waits no more");
    // Dropped connections gave their places back.
    assert_eq!(connections.open.load(Ordering::SeqCst), 0);
}

#[test]
fn at_the_limit_the_longest_idle_connection_makes_way() {
    // Regression: idle connections held every place, and /healthz was refused (or reset)
    // for as long as they lasted.
    let handler: Handler = Arc::new(|_: &Request| Reply::json(200, &serde_json::json!({})));
    let capacity = Capacity {
        workers: 1,
        max_connections: 3,
    };
    let (address, _shutdown, _listener) = listen(handler, capacity);
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    for _ in 0..5 {
        let started = Instant::now();
        assert!(get(address, "/").starts_with("HTTP/1.1 200 "));
        assert!(started.elapsed() < Duration::from_secs(1));
        // The idle clients come back as they are cut off.
        idle.push(TcpStream::connect(address).unwrap());
    }
    // The oldest idle connection was answered 503 and closed to make way.
    idle[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = idle[0].read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
}
