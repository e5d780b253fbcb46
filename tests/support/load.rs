//! Continuous load from concurrent OTLP clients (even-numbered ones over
//! gRPC, odd ones over HTTP), each sending the requests a test's generator
//! makes, one after the other, and writing down for every request when it
//! was sent, when it was answered, the answer, and the ids of its records.
//! A failed request is written down too and the client goes on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use otel_audit::exporter::client::{Client, ClientOptions, Destination};
use otel_audit::otlp::Signal;

use super::server::Setup;

/// One request a generator made.
pub struct Request {
    /// Traces or logs.
    pub signal: Signal,
    /// The protobuf export request.
    pub payload: Bytes,
    /// Each record's id (hex span id) and the test's tag for it.
    pub records: Vec<(String, &'static str)>,
}

/// One request as sent.
pub struct Sent {
    /// Which client sent it.
    pub client: u64,
    /// `grpc` or `http`.
    pub protocol: &'static str,
    /// Traces or logs.
    pub signal: Signal,
    /// Just before it was sent.
    pub sent: Instant,
    /// Just after the answer came.
    pub answered: Instant,
    /// The error, if it failed.
    pub error: Option<String>,
    /// Each record's id and tag.
    pub records: Vec<(String, &'static str)>,
}

impl Sent {
    /// Whether the server acknowledged it.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Clients sending until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Sent>>>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

/// Makes request number `n` of client `client`.
pub type Generator = Arc<dyn Fn(u64, u64) -> Request + Send + Sync>;

impl Load {
    /// Starts `clients` clients against `setup`'s receivers; each pauses
    /// `pause` between two requests.
    pub fn start(setup: &Setup, clients: u64, pause: Duration, generate: Generator) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..clients)
            .map(|client_id| {
                let (stop, sent, generate) = (stop.clone(), sent.clone(), generate.clone());
                let (grpc, http) = (setup.grpc_uri(), setup.http_uri());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    let _entered = rt.enter();
                    let (protocol, client) = if client_id % 2 == 0 {
                        let options = ClientOptions { headers: vec![], gzip: false, timeout: Duration::from_secs(20) };
                        ("grpc", Client::new(&Destination::Grpc { endpoint: grpc }, options).unwrap())
                    } else {
                        let destination = Destination::Http {
                            traces_url: format!("{http}/v1/traces"),
                            logs_url: format!("{http}/v1/logs"),
                        };
                        let options = ClientOptions { headers: vec![], gzip: true, timeout: Duration::from_secs(20) };
                        ("http", Client::new(&destination, options).unwrap())
                    };
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let request = generate(client_id, n);
                        n += 1;
                        let at = Instant::now();
                        let result = rt.block_on(client.send(request.signal, request.payload));
                        let answered = Instant::now();
                        sent.lock().unwrap().push(Sent {
                            client: client_id,
                            protocol,
                            signal: request.signal,
                            sent: at,
                            answered,
                            error: result.err().map(|e| e.to_string()),
                            records: request.records,
                        });
                        std::thread::sleep(pause);
                    }
                })
            })
            .collect();
        Load { stop, sent, clients: handles }
    }

    /// Requests answered so far.
    pub fn answered(&self) -> usize {
        self.sent.lock().unwrap().len()
    }

    /// Stops the clients (each finishes the request it is sending) and
    /// returns every request, in the order the answers came.
    pub fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.join().unwrap();
        }
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}
