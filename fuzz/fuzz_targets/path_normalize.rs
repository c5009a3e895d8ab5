//! Request-path normalization and the static file lookup behind it. A normalized path starts
//! with `/`, has no `.`, `..` or empty segments, only upper-case escapes of reserved bytes (no
//! `%00`), and normalizes to itself. Served by a `static` app, it never reads a file outside the
//! app's root (a sibling file, or one a symlink inside the root points to) and never fails with 500.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use ondemand::config::{Config, Handler};
use ondemand::fuzzing::{normalize_path, parse_config, static_relative_path};

const SECRET: &[u8] = b"outside the root\n";

struct Site {
    config: Config,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

/// A static app whose root holds a file, a directory and a symlink to a file beside the root.
fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("index.html"), "index\n").unwrap();
        std::fs::write(root.join("sub/a.txt"), "a\n").unwrap();
        std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link")).unwrap();
        std::os::unix::fs::symlink("../secret.txt", root.join("rel")).unwrap();
        let text = format!(
            "[[app]]\nname = \"files\"\npath = \"/\"\nstatic = {{ root = \"{}\" }}\n",
            root.display()
        );
        let config = parse_config(Path::new("fuzz.toml"), &text).expect("the site's config");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        Site {
            config,
            runtime,
            _dir: dir,
        }
    })
}

fn check_normalized(raw: &str, out: &str) {
    assert!(out.starts_with('/'), "{raw:?} -> {out:?}");
    let segments: Vec<&str> = out[1..].split('/').collect();
    for (i, s) in segments.iter().enumerate() {
        assert!(*s != "." && *s != "..", "{raw:?} -> {out:?}: a dot segment");
        // Only the last segment may be empty (a trailing slash, or the root itself).
        assert!(
            !s.is_empty() || i == segments.len() - 1,
            "{raw:?} -> {out:?}: //"
        );
    }
    let bytes = out.as_bytes();
    for (i, _) in out.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).expect("an escape with two digits");
        assert!(
            hex.iter()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "{raw:?} -> {out:?}: escape {hex:?}"
        );
        let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
        assert_ne!(value, 0, "{raw:?} -> {out:?}: %00");
        assert!(
            !(value.is_ascii_alphanumeric() || b"-._~".contains(&value)),
            "{raw:?} -> {out:?}: an unreserved byte left escaped"
        );
    }
    assert_eq!(
        normalize_path(out).as_deref(),
        Ok(out),
        "not idempotent on {raw:?}"
    );
}

fn check_static(path: &str) {
    // The prefix a `static` app at each segment boundary would strip.
    let mut prefix_end = 0;
    while let Some(next) = path[prefix_end + 1..].find('/') {
        prefix_end += 1 + next;
        let relative = static_relative_path(&path[..prefix_end], path);
        assert!(
            relative.starts_with('/'),
            "{path:?} under {:?}",
            &path[..prefix_end]
        );
    }
    let Ok(uri) = http::Uri::try_from(path) else {
        return;
    };
    let site = site();
    let Handler::Static(files) = &site.config.apps[0].handler else {
        unreachable!("the site is one static app")
    };
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.uri = uri;
    let (status, body) = site.runtime.block_on(async {
        let response = files.serve("files", "/", path, parts).await;
        let status = response.status();
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        (status, body)
    });
    assert_ne!(status.as_u16(), 500, "{path:?}");
    if let Ok(body) = body {
        assert_ne!(&body[..], SECRET, "{path:?} read a file outside the root");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(out) = normalize_path(raw) {
        check_normalized(raw, &out);
        check_static(&out);
    }
});
