/*
 * sdapp.c - a minimal socket-activated HTTP server, the app of the cold-start
 * part of scripts/bench-run.
 *
 * Takes its listening socket as systemd passes it: fd 3, with LISTEN_FDS >= 1
 * and LISTEN_PID equal to our pid (exit 1 otherwise, as sd_listen_fds() would
 * refuse it). The socket may be TCP (systemd-socket-activate) or unix
 * (ondemand's `listen = "socket"`). Accept loop: read the request head (up to
 * "\r\n\r\n"), write a fixed HTTP/1.1 200 with Content-Length,
 * "Connection: close" and "X-Pid: <our pid>" (so the benchmark can tell that
 * every sample started a new process), close, accept the next one. No
 * keep-alive, no idle exit: it runs until SIGTERM (default action).
 *
 * Nothing is written to stdout or stderr unless start-up fails.
 *
 * usage: sdapp
 * build: gcc -O2 -o sdapp sdapp.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_FD 3
#define HEAD_MAX 8192
#define READ_TIMEOUT_MS 5000

static char response[256];
static size_t response_len;

/* Read until the end of the request head; 0 on success, -1 otherwise. */
static int read_head(int fd)
{
    char buf[HEAD_MAX];
    size_t len = 0;

    while (len < sizeof buf) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, READ_TIMEOUT_MS);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            return -1; /* client too slow */
        ssize_t n = read(fd, buf + len, sizeof buf - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            return -1; /* client went away */
        size_t from = len >= 3 ? len - 3 : 0;
        len += (size_t)n;
        if (memmem(buf + from, len - from, "\r\n\r\n", 4) != NULL)
            return 0;
    }
    return -1; /* head too large */
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

int main(void)
{
    const char *pid_s = getenv("LISTEN_PID");
    const char *fds_s = getenv("LISTEN_FDS");
    if (pid_s == NULL || strtol(pid_s, NULL, 10) != (long)getpid()) {
        fprintf(stderr, "sdapp: LISTEN_PID=%s is not our pid %ld\n",
                pid_s ? pid_s : "(unset)", (long)getpid());
        return 1;
    }
    if (fds_s == NULL || strtol(fds_s, NULL, 10) < 1) {
        fprintf(stderr, "sdapp: LISTEN_FDS=%s, need at least 1\n",
                fds_s ? fds_s : "(unset)");
        return 1;
    }
    int type = 0;
    socklen_t tl = sizeof type;
    if (getsockopt(LISTEN_FD, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 ||
        type != SOCK_STREAM) {
        fprintf(stderr, "sdapp: fd 3 is not a stream socket\n");
        return 1;
    }

    response_len = (size_t)snprintf(response, sizeof response,
                                    "HTTP/1.1 200 OK\r\n"
                                    "Content-Type: text/plain\r\n"
                                    "Content-Length: 6\r\n"
                                    "Connection: close\r\n"
                                    "X-Pid: %ld\r\n"
                                    "\r\n"
                                    "hello\n",
                                    (long)getpid());

    /* A client that resets must not kill us with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);

    for (;;) {
        /* The socket may be non-blocking (it is shared with whoever made it):
         * wait for a connection first. */
        struct pollfd p = { .fd = LISTEN_FD, .events = POLLIN };
        if (poll(&p, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        if (p.revents & (POLLERR | POLLNVAL))
            return 1;
        int c = accept4(LISTEN_FD, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
                continue;
            return 1;
        }
        if (read_head(c) == 0) {
            write_all(c, response, response_len);
            shutdown(c, SHUT_WR);
        }
        close(c);
    }
}
