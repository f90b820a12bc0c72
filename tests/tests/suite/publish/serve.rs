//! `chunk-server serve`: ranges, HEAD, caching, traversal, many connections, slow and
//! silent clients.

use super::*;

/// Sends one raw HTTP/1.1 request (paths are sent exactly as given) and returns the status,
/// the headers (lower-case names) and the body.
fn raw_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(address).unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn serve_ranges_head_caching_and_traversal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(root.join("packs")).unwrap();
    std::fs::create_dir_all(root.join("channels")).unwrap();
    let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("packs/p.pack"), &content).unwrap();
    std::fs::write(root.join("channels/stable.json"), b"{}").unwrap();
    std::fs::write(dir.path().join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("packs/escape")).unwrap();
    let server = StoreServer::start(&root, &dir.path().join("access.log"), None);
    let address = server.url.trim_start_matches("http://").to_owned();
    let get = |path: &str, headers: &[(&str, &str)]| raw_request(&address, "GET", path, headers);

    let (status, headers, body) = get("/packs/p.pack", &[]);
    assert_eq!(status, 200);
    assert_eq!(body, content);
    assert!(header(&headers, "cache-control")
        .unwrap()
        .contains("immutable"));
    let etag = header(&headers, "etag").unwrap().to_owned();
    assert!(header(&headers, "last-modified").is_some());

    for (range, start, end) in [
        ("bytes=0-99", 0, 100),
        ("bytes=5000-5999", 5000, 6000),
        ("bytes=-10", 9990, 10000),
        ("bytes=9990-20000", 9990, 10000),
    ] {
        let (status, headers, body) = get("/packs/p.pack", &[("Range", range)]);
        assert_eq!(status, 206, "{range}");
        assert_eq!(body, &content[start..end], "{range}");
        assert_eq!(
            header(&headers, "content-range").unwrap(),
            format!("bytes {start}-{}/10000", end - 1)
        );
    }
    let (status, headers, _) = get("/packs/p.pack", &[("Range", "bytes=10000-")]);
    assert_eq!(status, 416);
    assert_eq!(header(&headers, "content-range"), Some("bytes */10000"));

    let (status, headers, body) = raw_request(&address, "HEAD", "/packs/p.pack", &[]);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-length"), Some("10000"));
    assert!(body.is_empty());

    let (status, _, body) = get("/packs/p.pack", &[("If-None-Match", &etag)]);
    assert_eq!(status, 304);
    assert!(body.is_empty());

    let (_, headers, _) = get("/channels/stable.json", &[]);
    assert!(header(&headers, "cache-control")
        .unwrap()
        .contains("max-age=60"));

    for path in [
        "/../secret.txt",
        "/packs/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/packs/%2E%2E/%2e%2e/secret.txt",
        "/packs/escape",
        "//etc/passwd",
        "/packs/",
        "/packs/..%2f..%2fsecret.txt",
    ] {
        let (status, _, body) = get(path, &[]);
        assert_eq!(status, 404, "{path} answered {status}");
        assert!(!String::from_utf8_lossy(&body).contains("secret"), "{path}");
    }
    let (status, _, _) = raw_request(&address, "POST", "/packs/p.pack", &[]);
    assert_eq!(status, 405);

    let served = server.served();
    assert!(served.iter().any(|s| s.path == "/packs/p.pack"
        && s.range == Some((0, 99))
        && s.status == 206
        && s.bytes == 100));
}

/// A store whose only file is `packs/p.pack`: 100,000 bytes of 7.
fn store_with_one_pack() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(root.join("packs")).unwrap();
    std::fs::write(root.join("packs/p.pack"), vec![7u8; 100_000]).unwrap();
    (dir, root)
}

/// A request for the first 1000 bytes of that pack, closing the connection after it.
fn range_request(address: &str) -> String {
    format!("GET /packs/p.pack HTTP/1.1\r\nHost: {address}\r\nRange: bytes=0-999\r\nConnection: close\r\n\r\n")
}

#[test]
fn serve_handles_hundreds_of_concurrent_connections() {
    let (dir, root) = store_with_one_pack();
    let server = StoreServer::start(&root, &dir.path().join("access.log"), None);
    let address = server.url.trim_start_matches("http://").to_owned();
    // Open 300 connections first, then send a request on each.
    let mut streams: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    for stream in &mut streams {
        stream
            .write_all(range_request(&address).as_bytes())
            .unwrap();
    }
    for mut stream in streams {
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        assert!(response.starts_with(b"HTTP/1.1 206"));
        assert!(response.ends_with(&[7u8; 1000]));
    }
}

/// Idle and slow clients cannot lock honest ones out: 200 connections that send nothing, on
/// a server limited to 128 file descriptors and 100 connections, are closed after the idle
/// timeout; a client that trickles its headers is closed after the header timeout; an
/// honest client is served throughout.
#[test]
fn serve_sheds_idle_and_slow_clients() {
    use std::os::unix::process::CommandExt;
    let (dir, root) = store_with_one_pack();
    let server = StoreServer::start_with(&root, &dir.path().join("access.log"), None, |command| {
        command.args([
            "--idle-timeout",
            "1s",
            "--header-timeout",
            "1s",
            "--max-connections",
            "100",
        ]);
        // SAFETY: setrlimit is async-signal-safe and touches only the child being started.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 128,
                    rlim_max: 128,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    });
    let address = server.url.trim_start_matches("http://").to_owned();
    let patience = std::time::Duration::from_secs(30);

    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    let mut slow = TcpStream::connect(&address).unwrap();

    // An honest client is served while the idle ones are held (it may wait for a slot).
    let mut honest = TcpStream::connect(&address).unwrap();
    honest.set_read_timeout(Some(patience)).unwrap();
    honest
        .write_all(range_request(&address).as_bytes())
        .unwrap();
    let mut response = Vec::new();
    honest.read_to_end(&mut response).unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 206"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert!(response.ends_with(&[7u8; 1000]));

    // Every idle connection is closed by the server (end of stream, or a reset), not left open.
    for (number, mut stream) in idle.into_iter().enumerate() {
        stream.set_read_timeout(Some(patience)).unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("idle connection {number} was not closed: {other:?}"),
        }
    }

    // A client sending one header byte every 200 ms is closed by the header timeout.
    slow.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let request = format!(
        "GET /packs/p.pack HTTP/1.1\r\nHost: {address}\r\nX-Slow: {}",
        "a".repeat(200)
    );
    let mut closed = false;
    for byte in request.as_bytes() {
        if slow.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        let mut buffer = [0u8; 512];
        match slow.read(&mut buffer) {
            Ok(_) => {
                closed = true; // an answer (408) or the end of the stream
                break;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(
        closed,
        "a client trickling its headers for 40 s was never closed"
    );
}

/// Clients that connect and send nothing are closed by the header timeout counted from the
/// accept, long before the idle timeout; a client that sends its request in time is served.
#[test]
fn serve_closes_silent_connections_after_the_header_timeout() {
    let (dir, root) = store_with_one_pack();
    let server = StoreServer::start_with(&root, &dir.path().join("access.log"), None, |command| {
        command.args(["--idle-timeout", "600s", "--header-timeout", "1s"]);
    });
    let address = server.url.trim_start_matches("http://").to_owned();
    let silent: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    let patience = std::time::Duration::from_secs(60);
    for (number, mut stream) in silent.into_iter().enumerate() {
        stream.set_read_timeout(Some(patience)).unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("silent connection {number} was not closed: {other:?}"),
        }
    }
    let mut honest = TcpStream::connect(&address).unwrap();
    honest.set_read_timeout(Some(patience)).unwrap();
    honest
        .write_all(range_request(&address).as_bytes())
        .unwrap();
    let mut response = Vec::new();
    honest.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1.1 206"));
}
