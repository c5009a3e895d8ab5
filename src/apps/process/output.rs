//! The app's stdout and stderr: every line goes to ondemand's log, and the last few are kept so
//! that when the app dies, the report can say what it said last.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How many of the app's last lines are kept.
pub(super) const KEPT_LINES: usize = 20;

/// Longer lines are cut: one runaway line (a minified bundle, a binary dump) must not fill memory
/// or the log.
pub(super) const MAX_LINE_BYTES: usize = 1000;

/// The app's last lines, shared by the two reader tasks and the [`super::AppProcess`].
#[derive(Debug, Default)]
pub(super) struct OutputTail {
    lines: Mutex<VecDeque<String>>,
    /// Woken on every new line; lets a test wait for a line instead of sleeping.
    new_line: Notify,
}

impl OutputTail {
    /// The kept lines, oldest first.
    pub(super) fn lines(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn push(&self, line: String) {
        let mut lines = self.lock();
        if lines.len() == KEPT_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
        drop(lines);
        self.new_line.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        // Nothing panics while holding the lock; recover the lines if something ever did.
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once the app has written `wanted` as a whole line (and it is still kept).
    #[cfg(test)]
    pub(super) async fn line(&self, wanted: &str) {
        loop {
            let notified = self.new_line.notified();
            tokio::pin!(notified);
            // Register before looking, so a line pushed in between is not missed.
            notified.as_mut().enable();
            if self.lock().iter().any(|line| line == wanted) {
                return;
            }
            notified.await;
        }
    }
}

/// Starts a task that reads `pipe` to its end, logging each line as the app's `stream` ("stdout"
/// or "stderr") and keeping it in `tail`. The pipe ends when every process holding its write end
/// (the app and anything it started) has exited or closed it.
pub(super) fn follow(
    app: String,
    stream: &'static str,
    pipe: impl AsyncRead + Unpin + Send + 'static,
    tail: Arc<OutputTail>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match read_line_cut(&mut reader, &mut line).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(app = %app, stream, "cannot read the app's output: {e}");
                    return;
                }
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            tracing::info!(app = %app, stream, "{text}");
            tail.push(text);
        }
    })
}

/// Reads one line into `line`, without its end (`\n` or `\r\n`), keeping at most
/// [`MAX_LINE_BYTES`] and skipping the rest. Returns false at the end of the pipe. A last line
/// without a newline still counts.
async fn read_line_cut<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut read_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(read_any);
        }
        read_any = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let content = &available[..newline.unwrap_or(available.len())];
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        line.extend_from_slice(&content[..content.len().min(room)]);
        let used = newline.map_or(available.len(), |at| at + 1);
        reader.consume(used);
        if newline.is_some() {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<Vec<u8>> {
        let mut reader = BufReader::with_capacity(16, input);
        let mut lines = Vec::new();
        let mut line = Vec::new();
        while read_line_cut(&mut reader, &mut line).await.unwrap() {
            lines.push(std::mem::take(&mut line));
        }
        lines
    }

    #[tokio::test]
    async fn lines_are_split_cut_and_the_last_one_needs_no_newline() {
        let long = vec![b'x'; 3 * MAX_LINE_BYTES];
        let mut input = b"one\r\ntwo\n".to_vec();
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\nlast");
        let lines = lines_of(&input).await;
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], b"one");
        assert_eq!(lines[1], b"two");
        assert_eq!(lines[2], vec![b'x'; MAX_LINE_BYTES]);
        assert_eq!(lines[3], b"last");
    }

    #[test]
    fn only_the_last_lines_are_kept() {
        let tail = OutputTail::default();
        for i in 0..KEPT_LINES + 5 {
            tail.push(i.to_string());
        }
        let lines = tail.lines();
        assert_eq!(lines.len(), KEPT_LINES);
        assert_eq!(lines[0], "5");
    }
}
