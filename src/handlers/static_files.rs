//! The `static` handler: the files under an app's root directory.
//!
//! tower-http's `ServeDir` does the HTTP work (Content-Type by extension, ETag and Last-Modified
//! with 304, Range with 206 and 416, HEAD, `.br`/`.gz` variants, `index.html` for directories, no
//! listings). This module gives it the app's view of the request (the app's path prefix removed),
//! confines it to the root ([`super::beneath`]) unless symlinks may lead out, and turns its
//! errors into ondemand's own answers.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use toml::Spanned;
use tower_http::services::fs::{Backend, DefaultServeDirFallback};
use tower_http::services::ServeDir;

use super::beneath::Beneath;
use super::{plain, Body, BoxError};
use crate::config::{Located, StaticFile};

/// Files under one root.
pub struct StaticFiles {
    root: PathBuf,
    follow_symlinks: bool,
    /// Boxed: the backend holds a request's opened file, which makes `ServeDir` large for a
    /// config value (the handler enum is as large as its largest variant). In a Mutex, not
    /// cloned per request (its paths are copied by a clone): `try_call` needs `&mut` only to
    /// reach a fallback, which this one has none of, and its future owns a clone of the backend.
    dir: Box<Mutex<Dir>>,
}

/// The configured `ServeDir`, confined to the root or free to follow symlinks.
type Dir = ServeDir<DefaultServeDirFallback, Beneath>;

impl fmt::Debug for StaticFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticFiles")
            .field("root", &self.root)
            .field("follow_symlinks", &self.follow_symlinks)
            .finish()
    }
}

impl StaticFiles {
    /// Builds the handler from `static = { ... }` of app `app` mounted at path prefix `prefix`.
    pub fn from_config(
        app: &str,
        prefix: &str,
        file: Spanned<StaticFile>,
    ) -> Result<StaticFiles, Located> {
        let file = file.into_inner();
        let at_root = |why: String| {
            Located::new(
                file.root.span(),
                format!("app {app:?}: static root {:?} {why}", file.root.get_ref()),
            )
        };
        let root = root_dir(file.root.get_ref()).map_err(at_root)?;
        // A trailing-slash redirect must keep the prefix the client used.
        let redirect_prefix = if prefix == "/" { "" } else { prefix };
        let precompressed = file.precompressed.unwrap_or(true);
        let confined = !file.follow_symlinks.unwrap_or(false);
        let backend =
            Beneath::new(&root, confined).map_err(|e| at_root(format!("cannot be opened: {e}")))?;
        let dir = configure(
            ServeDir::with_backend(&root, backend),
            redirect_prefix,
            precompressed,
        );
        Ok(StaticFiles {
            root,
            follow_symlinks: !confined,
            dir: Box::new(Mutex::new(dir)),
        })
    }

    /// The response to a request for `path` (normalized, with the app's `prefix`) of app `app`.
    pub async fn serve(&self, app: &str, prefix: &str, path: &str, parts: Parts) -> Response<Body> {
        let relative = relative_path(prefix, path);
        let Some(req) = inner_request(relative, parts) else {
            return no_file(app, path);
        };
        let future = {
            let mut dir = self.dir.lock().unwrap_or_else(|e| e.into_inner());
            dir.try_call(req)
        };
        let result = future.await;
        match result {
            Ok(resp) if resp.status() == StatusCode::NOT_FOUND => no_file(app, path),
            Ok(resp) => resp.map(|body| body.map_err(BoxError::from).boxed_unsync()),
            Err(e) if is_not_found(&e) => no_file(app, path),
            Err(e) => {
                let file = self.root.join(relative.trim_start_matches('/'));
                tracing::warn!(app, file = %file.display(), error = %e, "cannot serve a static file");
                plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("ondemand: app {app:?} could not read the file for {path}; the log says why\n"),
                )
            }
        }
    }
}

fn configure<B: Backend>(
    dir: ServeDir<DefaultServeDirFallback, B>,
    redirect_prefix: &str,
    precompressed: bool,
) -> ServeDir<DefaultServeDirFallback, B> {
    let dir = dir
        .append_index_html_on_directories(true)
        .redirect_path_prefix(redirect_prefix);
    if precompressed {
        dir.precompressed_br().precompressed_gzip()
    } else {
        dir
    }
}

/// The canonical form of a configured root, or what is wrong with it.
fn root_dir(raw: &str) -> Result<PathBuf, String> {
    if !Path::new(raw).is_absolute() {
        return Err("is not an absolute path: write it from / (like \"/srv/site\")".into());
    }
    let root = std::fs::canonicalize(raw).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => "does not exist: create the directory or fix the path".into(),
        _ => format!("cannot be used: {e}"),
    })?;
    if !root.is_dir() {
        return Err("is not a directory: root names the directory whose files are served".into());
    }
    Ok(root)
}

/// `path` without the app's path prefix: "/docs/a.html" under "/docs" is "/a.html".
pub fn relative_path<'a>(prefix: &str, path: &'a str) -> &'a str {
    match path.strip_prefix(prefix) {
        Some(rest) if prefix != "/" && rest.starts_with('/') => rest,
        Some(_) if prefix != "/" => "/",
        _ => path,
    }
}

/// The request `ServeDir` sees: the same method and headers, the path relative to the app.
fn inner_request(relative: &str, mut parts: Parts) -> Option<Request<Empty<Bytes>>> {
    let target = match parts.uri.query() {
        Some(query) => format!("{relative}?{query}"),
        None => relative.to_string(),
    };
    parts.uri = Uri::try_from(target).ok()?;
    Some(Request::from_parts(parts, Empty::new()))
}

/// Missing files, paths through something that is not a directory or leading out of root, and
/// names longer than the file system allows (no such file can exist).
fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || matches!(
            e.raw_os_error(),
            Some(
                nix::libc::ENOTDIR | nix::libc::ELOOP | nix::libc::EXDEV | nix::libc::ENAMETOOLONG
            )
        )
}

fn no_file(app: &str, path: &str) -> Response<Body> {
    plain(
        StatusCode::NOT_FOUND,
        format!("ondemand: app {app:?} has no file for {path}\n"),
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use http::StatusCode;

    use crate::config::Handler;

    /// Found by fuzz/fuzz_targets/path_normalize.rs: a file name over the file system's limit
    /// (ENAMETOOLONG) was answered 500 "could not read the file" instead of 404.
    #[tokio::test]
    async fn a_name_too_long_for_the_file_system_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[[app]]\nname = \"files\"\nstatic = {{ root = \"{}\" }}\n",
            dir.path().display()
        );
        let config = crate::config::parse(Path::new("t.toml"), &text).unwrap();
        let Handler::Static(files) = &config.apps[0].handler else {
            panic!("a static app")
        };
        for path in [
            format!("/s.{}", "'".repeat(300)),
            format!("/{}/x", "a".repeat(5000)),
        ] {
            let (mut parts, ()) = http::Request::new(()).into_parts();
            parts.uri = path.parse().unwrap();
            let response = files.serve("files", "/", &path, parts).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }
}
