//! A deliberately misbehaving store server for the bad-input tests: plain HTTP/1.1 on
//! 127.0.0.1, one thread per connection, serving a store directory with single ranges, and
//! breaking pack responses in one chosen way.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Behave.
    None,
    /// Flip a byte in every pack response.
    TamperPacks,
    /// Send 64 KiB more than asked (and say so in Content-Length).
    ExtraBytes,
    /// Close the connection halfway through every pack response.
    Truncate,
    /// 404 for packs.
    PackNotFound,
    /// Send headers for packs, then nothing, until the server is dropped.
    Stall,
    /// Answer the first N pack requests with 500.
    FailFirst(usize),
    /// Ignore Range: always 200 with the whole file.
    IgnoreRange,
    /// Send the first N bytes of every pack response, then stall.
    StallAfterBytes(usize),
    /// Send the first N bytes of the first pack response, then stall; behave afterwards.
    StallFirstAfterBytes(usize),
}

pub struct FaultServer {
    pub url: String,
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FaultServer {
    pub fn start(root: &Path, fault: Fault) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let pack_requests = Arc::new(AtomicUsize::new(0));
        let (root, log, stop_flag) = (root.to_owned(), requests.clone(), stop.clone());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || loop {
            if stop_flag.load(Ordering::Relaxed) {
                return;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    let (root, log, stop, packs) = (
                        root.clone(),
                        log.clone(),
                        stop_flag.clone(),
                        pack_requests.clone(),
                    );
                    std::thread::spawn(move || {
                        let _ = handle(stream, &root, fault, &log, &stop, &packs);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        });
        FaultServer {
            url,
            requests,
            stop,
        }
    }

    pub fn pack_requests(&self) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains("/packs/"))
            .count()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle(
    stream: TcpStream,
    root: &Path,
    fault: Fault,
    log: &Mutex<Vec<String>>,
    stop: &AtomicBool,
    packs: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("range:") {
            range = value.trim().strip_prefix("bytes=").and_then(|r| {
                let (a, b) = r.split_once('-')?;
                Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
            });
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    log.lock().unwrap().push(format!("{path} {range:?}"));
    let mut out = stream;
    let is_pack = path.starts_with("/packs/");
    let file: PathBuf = root.join(path.trim_start_matches('/'));
    let Ok(mut data) = std::fs::read(&file).map_err(|_| ()).and_then(|d| {
        if path.contains("..") {
            Err(())
        } else {
            Ok(d)
        }
    }) else {
        return write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    };
    let number = if is_pack {
        packs.fetch_add(1, Ordering::SeqCst)
    } else {
        0
    };
    if is_pack {
        match fault {
            Fault::PackNotFound => return write!(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            Fault::FailFirst(n) if number < n => return write!(out, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            _ => {}
        }
    }
    let total = data.len() as u64;
    let (status, body_range) = match range {
        Some((a, b)) if fault != Fault::IgnoreRange && a < total => {
            ("206 Partial Content", (a, (b + 1).min(total)))
        }
        _ => ("200 OK", (0, total)),
    };
    let mut body: Vec<u8> = data
        .drain(body_range.0 as usize..body_range.1 as usize)
        .collect();
    if is_pack {
        match fault {
            Fault::TamperPacks if !body.is_empty() => {
                let middle = body.len() / 2;
                body[middle] ^= 0x55;
            }
            Fault::ExtraBytes => body.extend(std::iter::repeat_n(0xAB, 64 * 1024)),
            _ => {}
        }
    }
    let content_range = if status.starts_with("206") {
        format!(
            "Content-Range: bytes {}-{}/{total}\r\n",
            body_range.0,
            body_range.1 - 1
        )
    } else {
        String::new()
    };
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{content_range}Connection: close\r\n\r\n",
        body.len()
    )?;
    let stall_at = match fault {
        Fault::Stall => Some(0),
        Fault::StallAfterBytes(n) => Some(n.min(body.len())),
        Fault::StallFirstAfterBytes(n) if number == 0 => Some(n.min(body.len())),
        _ => None,
    };
    if let Some(sent) = stall_at.filter(|_| is_pack) {
        out.write_all(&body[..sent])?;
        out.flush()?;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        return Ok(());
    }
    if is_pack && fault == Fault::Truncate {
        out.write_all(&body[..body.len() / 2])?;
        return out.flush();
    }
    out.write_all(&body)?;
    out.flush()?;
    // Drain anything else the client sends, so closing does not reset the connection early.
    let _ = out.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = reader.read(&mut [0u8; 64]);
    Ok(())
}
