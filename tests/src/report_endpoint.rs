//! An operator's report endpoint for the outcome-report tests: plain HTTP/1.1 on 127.0.0.1,
//! recording every POST (its Authorization header and JSON body) and answering 500 to the
//! first `fail_first` of them, 204 to the rest.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use diffota::outcomes::OutcomeReport;

#[derive(Clone, Debug)]
pub struct Received {
    pub authorization: Option<String>,
    /// The body, read as the updater's report type (None: not a report, e.g. a GET).
    pub body: Option<OutcomeReport>,
    /// The status the endpoint answered.
    pub status: u16,
}

pub struct ReportEndpoint {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl ReportEndpoint {
    pub fn start(fail_first: usize) -> ReportEndpoint {
        ReportEndpoint::start_with(fail_first, None)
    }

    /// An endpoint that answers every POST with `status` and a `Location` header (a
    /// redirect), acknowledging nothing.
    pub fn start_redirecting(status: u16, location: &str) -> ReportEndpoint {
        ReportEndpoint::start_with(0, Some((status, location.to_owned())))
    }

    fn start_with(fail_first: usize, redirect: Option<(u16, String)>) -> ReportEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopped) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    handle(stream, &log, fail_first, redirect.as_ref());
                }
            }
        });
        ReportEndpoint {
            url: format!("http://127.0.0.1:{port}/reports"),
            received,
            stop,
            port,
        }
    }

    /// Every POST, in order, failed ones included.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The reports the endpoint acknowledged (2xx).
    pub fn accepted(&self) -> Vec<OutcomeReport> {
        self.received()
            .into_iter()
            .filter(|r| r.status < 300)
            .map(|r| {
                r.body
                    .expect("an acknowledged POST carries an outcome report")
            })
            .collect()
    }
}

impl Drop for ReportEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn handle(
    stream: TcpStream,
    log: &Mutex<Vec<Received>>,
    fail_first: usize,
    redirect: Option<&(u16, String)>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let (mut length, mut authorization) = (0usize, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let status = {
        let mut log = log.lock().unwrap();
        let status = if !request_line.starts_with("POST ") {
            405
        } else if let Some((status, _)) = redirect {
            *status
        } else if log.len() < fail_first {
            500
        } else {
            204
        };
        log.push(Received {
            authorization,
            body: serde_json::from_slice(&body).ok(),
            status,
        });
        status
    };
    let reason = match status {
        204 => "No Content",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let location = match redirect {
        Some((_, location)) => format!("Location: {location}\r\n"),
        None => String::new(),
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\n{location}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
}
