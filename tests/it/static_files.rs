//! The `static` handler: index files, Content-Type, conditional GET, Range, HEAD, pre-compressed
//! variants, no listings, no escape from the root (by path or by symlink), and config errors.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::server::Ondemand;
use crate::support::{get, raw_request, run_ondemand, tempdir, write_file, Response};

const SECRET: &str = "TOP-SECRET-OUTSIDE-ROOT";
const A_TXT: &str = "hello static world\n";
/// Not real gzip: the test only checks that these exact bytes are sent for the `.gz` variant.
const A_TXT_GZ: &[u8] = b"\x1f\x8b pretend-gzip-bytes";

/// A site in a temp dir: `site/` is the root; `etc/passwd` and `outside/` sit next to it.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempdir();
        let top = dir.path();
        for d in ["site/sub", "site/empty", "outside", "etc"] {
            std::fs::create_dir_all(top.join(d)).unwrap();
        }
        write_file(top, "etc/passwd", SECRET);
        write_file(top, "outside/secret.txt", SECRET);
        write_file(top, "secret.txt", SECRET);
        let site = top.join("site");
        write_file(&site, "index.html", "<h1>home</h1>\n");
        write_file(&site, "a.txt", A_TXT);
        std::fs::write(site.join("a.txt.gz"), A_TXT_GZ).unwrap();
        write_file(&site, "style.css", "body { color: red }\n");
        write_file(&site, "data.json", "{}\n");
        write_file(&site, "sub/index.html", "<h1>sub</h1>\n");
        write_file(&site, "sub/b.txt", "b\n");
        symlink("../outside/secret.txt", site.join("link-out")).unwrap();
        symlink(top.join("outside"), site.join("dir-out")).unwrap();
        symlink("sub/b.txt", site.join("link-in")).unwrap();
        symlink(site.join("a.txt"), site.join("abs-in")).unwrap();
        symlink("/proc/self/root/etc/passwd", site.join("magic")).unwrap();
        nix::unistd::mkfifo(&site.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        Site { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("site")
    }

    /// ondemand serving the root at "/" (app "site") and again at "/docs" (app "docs").
    fn serve(&self, follow_symlinks: bool) -> Ondemand {
        let root = self.root();
        Ondemand::start(&format!(
            "[server]\nidle_timeout = \"never\"\n\n\
             [[app]]\nname = \"site\"\nstatic = {{ root = \"{r}\", follow_symlinks = {follow_symlinks} }}\n\n\
             [[app]]\nname = \"docs\"\npath = \"/docs\"\nstatic = {{ root = \"{r}\", follow_symlinks = {follow_symlinks} }}\n",
            r = root.display()
        ))
    }
}

/// `method path` with extra header lines, on a fresh connection.
fn request(port: u16, method: &str, path: &str, headers: &[&str]) -> Response {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: t.example\r\nConnection: close\r\n");
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    raw_request(port, raw.as_bytes()).unwrap()
}

#[test]
fn index_files_and_content_types() {
    let site = Site::new();
    let od = site.serve(false);
    let r = get(od.port, "t.example", "/").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>home</h1>\n"));
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let r = get(od.port, "t.example", "/sub/").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>sub</h1>\n"));
    let r = get(od.port, "t.example", "/sub").unwrap();
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location"), Some("/sub/"));
    for (path, ct) in [
        ("/a.txt", "text/plain"),
        ("/style.css", "text/css"),
        ("/data.json", "application/json"),
    ] {
        let r = get(od.port, "t.example", path).unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(ct),
            "{path}: {r:?}"
        );
    }
}

#[test]
fn the_app_path_prefix_is_removed() {
    let site = Site::new();
    let od = site.serve(false);
    let r = get(od.port, "t.example", "/docs/a.txt").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, A_TXT));
    let r = get(od.port, "t.example", "/docs").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>home</h1>\n"));
    let r = get(od.port, "t.example", "/docs/sub/").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>sub</h1>\n"));
    let r = get(od.port, "t.example", "/docs/sub?x=1").unwrap();
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location"), Some("/docs/sub/?x=1"));
}

#[test]
fn missing_files_and_directories_without_index_are_404_without_listing() {
    let site = Site::new();
    let od = site.serve(false);
    let r = get(od.port, "t.example", "/nope.txt").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(
        r.text(),
        "ondemand: app \"site\" has no file for /nope.txt\n"
    );
    let r = get(od.port, "t.example", "/empty/").unwrap();
    assert_eq!(r.status, 404);
    // A FIFO is neither served nor waited on.
    let r = get(od.port, "t.example", "/fifo").unwrap();
    assert_eq!(r.status, 404);
    let r = get(od.port, "t.example", "/docs/sub/nope").unwrap();
    assert_eq!(
        r.text(),
        "ondemand: app \"docs\" has no file for /docs/sub/nope\n"
    );
}

#[test]
fn conditional_requests_answer_304() {
    let site = Site::new();
    let od = site.serve(false);
    let r = get(od.port, "t.example", "/a.txt").unwrap();
    let etag = r.header("etag").expect("an ETag").to_string();
    let modified = r
        .header("last-modified")
        .expect("a Last-Modified")
        .to_string();
    let r = request(
        od.port,
        "GET",
        "/a.txt",
        &[&format!("If-None-Match: {etag}")],
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = request(
        od.port,
        "GET",
        "/a.txt",
        &[&format!("If-Modified-Since: {modified}")],
    );
    assert_eq!(r.status, 304);
    let r = request(od.port, "GET", "/a.txt", &["If-None-Match: \"other\""]);
    assert_eq!((r.status, r.text().as_str()), (200, A_TXT));
}

#[test]
fn ranges_answer_206_and_416() {
    let site = Site::new();
    let od = site.serve(false);
    let r = request(od.port, "GET", "/a.txt", &["Range: bytes=0-4"]);
    assert_eq!((r.status, r.text().as_str()), (206, "hello"));
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 0-4/{}", A_TXT.len()).as_str())
    );
    let r = request(od.port, "GET", "/a.txt", &["Range: bytes=1000-2000"]);
    assert_eq!(r.status, 416);
}

#[test]
fn head_sends_headers_without_body() {
    let site = Site::new();
    let od = site.serve(false);
    let mut s = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"HEAD /a.txt HTTP/1.1\r\nHost: t.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length = format!("content-length: {}", A_TXT.len());
    assert!(head.to_ascii_lowercase().contains(&length), "{head}");
    assert_eq!(body, "", "HEAD must send no body");
}

#[test]
fn precompressed_variants_when_the_client_accepts_them() {
    let site = Site::new();
    let od = site.serve(false);
    let r = request(od.port, "GET", "/a.txt", &["Accept-Encoding: gzip"]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.body, A_TXT_GZ);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let r = get(od.port, "t.example", "/a.txt").unwrap();
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.text(), A_TXT);
}

/// Files stay open between requests (for speed); each request must still get the file as it is
/// now: replaced, rewritten in place, deleted, or swapped for a symlink out of the root.
#[test]
fn a_file_changed_between_requests_is_served_as_it_is_now() {
    let site = Site::new();
    let root = site.root();
    let od = site.serve(false);
    let text = |path: &str| {
        let r = get(od.port, "t.example", path).unwrap();
        let length = r.header("content-length").map(str::to_string);
        (r.status, r.text(), length)
    };
    let length = |s: &str| Some(s.len().to_string());
    assert_eq!(text("/a.txt"), (200, A_TXT.to_string(), length(A_TXT)));
    // A range of the same file, read from where the kept file's other reader left off.
    let r = request(od.port, "GET", "/a.txt", &["Range: bytes=6-11"]);
    assert_eq!((r.status, r.text().as_str()), (206, "static"));
    write_file(&root, "a.txt.new", "replaced by a rename\n");
    std::fs::rename(root.join("a.txt.new"), root.join("a.txt")).unwrap();
    let replaced = "replaced by a rename\n";
    assert_eq!(
        text("/a.txt"),
        (200, replaced.to_string(), length(replaced))
    );
    let rewritten = "rewritten in place, and longer than before\n";
    std::fs::write(root.join("a.txt"), rewritten).unwrap();
    assert_eq!(
        text("/a.txt"),
        (200, rewritten.to_string(), length(rewritten))
    );
    std::fs::remove_file(root.join("a.txt")).unwrap();
    assert_eq!(text("/a.txt").0, 404);
    std::fs::write(root.join("a.txt"), A_TXT).unwrap();
    assert_eq!(text("/a.txt").1, A_TXT);
    std::fs::remove_file(root.join("a.txt")).unwrap();
    symlink("../outside/secret.txt", root.join("a.txt")).unwrap();
    let (status, body, _) = text("/a.txt");
    assert_eq!(status, 404);
    assert!(!body.contains(SECRET));
}

/// Known traversal payloads: each is refused (400) or not found (404), never a file from outside.
const TRAVERSALS: &[&str] = &[
    "/../etc/passwd",
    "/../../../../etc/passwd",
    "/..%2fetc/passwd",
    "/..%2f..%2fetc/passwd",
    "/%2e%2e/etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/%2E%2E%2Fetc%2Fpasswd",
    "/%252e%252e/etc/passwd",
    "/%252e%252e%252fetc%252fpasswd",
    "/..%5c..%5cetc/passwd",
    "/..\\..\\etc\\passwd",
    "/a/%00",
    "/a.txt%00.html",
    "/.%2e/.%2e/etc/passwd",
    "/%2e./etc/passwd",
    "//etc/passwd",
    "/%2fetc/passwd",
    "/%2F..%2F..%2Fetc%2Fpasswd",
    "/%c0%ae%c0%ae/etc/passwd",
    "/%c0%ae%c0%ae%c0%afetc%c0%afpasswd",
    "/%e0%80%ae%e0%80%ae/etc/passwd",
    "/sub/../../etc/passwd",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/..;/etc/passwd",
    "/docs/../../etc/passwd",
    "/docs/..%2f..%2fsecret.txt",
    "/link-out",
    "/dir-out/secret.txt",
    "/docs/link-out",
    "/magic",
];

#[test]
fn traversal_payloads_never_leave_the_root() {
    let site = Site::new();
    let od = site.serve(false);
    // Twice: the second time, files opened the first time are still open.
    for payload in TRAVERSALS.iter().chain(TRAVERSALS) {
        let r = request(od.port, "GET", payload, &[]);
        assert!(
            r.status == 400 || r.status == 404,
            "{payload}: {} {}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains(SECRET), "{payload} leaked the secret");
        assert!(!r.text().contains("root:"), "{payload} leaked /etc/passwd");
    }
}

#[test]
fn symlinks_out_of_root_only_when_allowed() {
    let site = Site::new();
    let confined = site.serve(false);
    for path in ["/link-out", "/dir-out/secret.txt", "/magic"] {
        let r = get(confined.port, "t.example", path).unwrap();
        assert_eq!(r.status, 404, "{path}");
    }
    for (path, body) in [("/link-in", "b\n"), ("/abs-in", A_TXT)] {
        let r = get(confined.port, "t.example", path).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, body), "{path}");
    }
    drop(confined);
    let free = site.serve(true);
    for path in ["/link-out", "/dir-out/secret.txt"] {
        let r = get(free.port, "t.example", path).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, SECRET), "{path}");
    }
}

fn check(dir: &Path, app: &str) -> (i32, String) {
    let config = write_file(
        dir,
        "ondemand.toml",
        &format!("[[app]]\nname = \"a\"\n{app}"),
    );
    let (code, _out, err) = run_ondemand(&["check", "--config", config.to_str().unwrap()]);
    (code, err)
}

#[test]
fn bad_roots_and_two_handlers_are_located_errors() {
    let dir = tempdir();
    let file = write_file(dir.path(), "plain.txt", "x");
    let missing = dir.path().join("missing");
    let cases = [
        (
            format!("static = {{ root = \"{}\" }}\n", missing.display()),
            "3:19",
            "does not exist",
        ),
        (
            "static = { root = \"site\" }\n".to_string(),
            "3:19",
            "not an absolute path",
        ),
        (
            format!("static = {{ root = \"{}\" }}\n", file.display()),
            "3:19",
            "not a directory",
        ),
        (
            format!(
                "respond = {{}}\nstatic = {{ root = \"{}\" }}\n",
                dir.path().display()
            ),
            "4:10",
            "more than one handler",
        ),
        (
            "static = { root = \"/\", index = \"x\" }\n".to_string(),
            "3:",
            "index",
        ),
    ];
    for (app, at, what) in cases {
        let (code, err) = check(dir.path(), &app);
        assert_eq!(code, 2, "{app}: {err}");
        assert!(err.contains(&format!("ondemand.toml:{at}")), "{app}: {err}");
        assert!(err.contains(what), "{app}: {err}");
    }
}
