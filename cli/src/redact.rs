//! URLs as they may be shown: in a log line, an error, a D-Bus property or signal, a report.
//! A store or endpoint URL may carry a password (`https://user:secret@host/`) or a token in
//! its query (a CDN's signed URL); neither may leave the process that was configured with
//! it. The request itself uses the URL as configured; everything shown uses `redact_url`.

/// `url` with the password of its userinfo and the values of its query replaced by `***`.
/// Anything that is not a URL with `://` is returned unchanged (a path).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***{host}"),
                // A user name alone is often a token (`https://<token>@host`).
                None => format!("***{host}"),
            }
        }
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((query, fragment)) => (query, format!("#{fragment}")),
                None => (query, String::new()),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) => format!("{name}=***"),
                    None if pair.is_empty() => String::new(),
                    None => "***".to_owned(),
                })
                .collect();
            format!("{path}?{}{fragment}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

/// Every URL inside `text` (a message that may quote one) redacted.
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | ','))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_query_values_are_hidden() {
        assert_eq!(
            redact_url("https://fleet:s3cret@store.example/releases/1.0/rootfs.didx"),
            "https://fleet:***@store.example/releases/1.0/rootfs.didx"
        );
        assert_eq!(
            redact_url("https://cdn.example/packs/a.pack?X-Amz-Signature=abc&v=1#top"),
            "https://cdn.example/packs/a.pack?X-Amz-Signature=***&v=***#top"
        );
        assert_eq!(
            redact_url("https://token@host:8443?key"),
            "https://***@host:8443?***"
        );
        assert_eq!(redact_url("/media/usb/store"), "/media/usb/store");
        assert_eq!(
            redact_url("http://127.0.0.1:8080/store"),
            "http://127.0.0.1:8080/store"
        );
    }

    #[test]
    fn urls_inside_a_message_are_hidden() {
        assert_eq!(
            redact_urls_in("error sending request for url (https://u:pw@h/x?t=1): refused"),
            "error sending request for url (https://u:***@h/x?t=***): refused"
        );
        assert_eq!(redact_urls_in("no url here"), "no url here");
    }
}
