//! A peer that answers every request with a status and a body that never ends, as a broken or
//! hostile storage endpoint, intake or proxy may.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Endless {
    pub address: SocketAddr,
    requests: Arc<AtomicU64>,
}

impl Endless {
    /// Answers each connection `status` with a chunked body of `x`s until the client leaves.
    pub fn start(status: u16) -> Endless {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let requests = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || answer_forever(stream, status));
            }
        });
        Endless { address, requests }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

fn answer_forever(mut stream: TcpStream, status: u16) {
    // Whatever the client sends is read and dropped, so its request never blocks on us.
    if let Ok(mut incoming) = stream.try_clone() {
        std::thread::spawn(move || {
            let mut sink = [0u8; 64 * 1024];
            while matches!(incoming.read(&mut sink), Ok(read) if read > 0) {}
        });
    }
    let head = format!(
        "HTTP/1.1 {status} Endless\r\nContent-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
    chunk.extend(std::iter::repeat_n(b'x', 64 * 1024));
    chunk.extend(b"\r\n");
    while stream.write_all(&chunk).is_ok() {}
}
