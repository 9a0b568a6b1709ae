//! Credential redaction for camera URLs.
//!
//! Camera URLs often carry `user:password@`. Nothing derived from a URL may
//! reach a log line, a metric label, a topic or a payload without passing
//! through here first. GStreamer error texts can quote the URL too, so the
//! scrubber works on arbitrary text, not only on a parsed URL.

/// Replaces the user-info part of every `scheme://user:pass@host` in `text`
/// with `***@`.
///
/// For example `rtsp://admin:s3cret@10.0.0.5:554/sub` becomes
/// `rtsp://***@10.0.0.5:554/sub`; text without a URL is returned as is.
pub(crate) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        match userinfo_end(tail) {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Where the user-info of the URL starting `tail` (just after `://`) ends:
/// the index of its `@`, if it has one.
///
/// People type passwords raw, so a password may hold any reserved
/// character (`/ ? # @ : [ ] ' "` …) and the authority cannot be found by
/// the first `/`. The URL runs to the first whitespace; the user-info ends
/// at the *last* `@` in it. One ambiguity stays: `rtsp://cam/a@b` may be a
/// path with an `@` or a user name with a `/`. Without a `:` before the `@`
/// it is read as a path (no password to hide); with one (`user:pass`) it is
/// read as user-info, so a host and port before a path `@`
/// (`rtsp://cam:554/a@b`) is hidden too: hiding a little too much is the
/// safe side of this guess.
fn userinfo_end(tail: &str) -> Option<usize> {
    let url = &tail[..tail.find(char::is_whitespace).unwrap_or(tail.len())];
    let at = url.rfind('@')?;
    let user_info = &url[..at];
    let plain_authority = !user_info.contains(['/', '?', '#']);
    (plain_authority || user_info.contains(':')).then_some(at)
}

/// Redacts one URL; the same as [`redact`], named for intent at call sites.
pub(crate) fn redact_url(url: &str) -> String {
    redact(url)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn strips_user_and_password() {
        assert_eq!(redact("rtsp://admin:pw@cam.local/stream1"), "rtsp://***@cam.local/stream1");
    }

    #[test]
    fn strips_user_only() {
        assert_eq!(redact("rtsp://admin@cam.local/s"), "rtsp://***@cam.local/s");
    }

    #[test]
    fn password_with_at_sign_and_colon() {
        assert_eq!(redact("rtsp://u:p@ss:w@rd@10.1.1.1:554/x"), "rtsp://***@10.1.1.1:554/x");
    }

    #[test]
    fn at_sign_in_path_is_not_userinfo() {
        assert_eq!(redact("rtsp://cam.local/a@b"), "rtsp://cam.local/a@b");
    }

    #[test]
    fn url_inside_error_text_and_several_urls() {
        let msg = "Could not open resource for reading: rtsp://a:b@h1/x (retrying rtsps://c:d@h2:322)";
        assert_eq!(redact(msg), "Could not open resource for reading: rtsp://***@h1/x (retrying rtsps://***@h2:322)");
    }

    #[test]
    fn every_reserved_character_in_a_password_stays_hidden() {
        // RFC 3986 gen-delims and sub-delims, quotes, and `%` of an
        // encoded password.
        for c in ":/?#[]@!$&'()*+,;=%\"\\".chars() {
            let pw = format!("pW{c}zQ{c}9k");
            for url in [format!("rtsp://admin:{pw}@10.0.0.5:554/s"), format!("rtsps://admin:{pw}@cam")] {
                let text = format!("Could not open resource for reading: {url} (retrying)");
                let shown = redact(&text);
                assert!(!shown.contains(&pw) && !shown.contains("zQ"), "{c:?}: {shown}");
                assert!(shown.contains("://***@") && shown.ends_with(" (retrying)"), "{c:?}: {shown}");
            }
        }
        // Quoted in an error text, and in a config error's value.
        assert_eq!(redact("url 'rtsp://u:a'b@h/s'"), "url 'rtsp://***@h/s'");
        assert_eq!(redact("url = \"rtsp://u:x/y?z#w@h/s\""), "url = \"rtsp://***@h/s\"");
    }

    #[test]
    fn no_url_no_change() {
        assert_eq!(redact("file:///srv/clip.mp4"), "file:///srv/clip.mp4");
        assert_eq!(redact(""), "");
        assert_eq!(redact("://"), "://");
    }
}
