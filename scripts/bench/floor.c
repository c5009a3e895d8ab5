/*
 * floor.c - the lower bound for "a supervisor starts a process that answers".
 *
 * Run by xinetd with `wait = yes`: xinetd does not accept; it dup2()s the
 * listening socket onto fds 0, 1 and 2 and execs us. We accept on fd 0, read
 * the request head (up to "\r\n\r\n"), write a fixed HTTP/1.1 200 response
 * with Content-Length and "Connection: close", close the connection, and go
 * back to waiting. When no connection arrives for IDLE_MS milliseconds we exit,
 * so xinetd re-arms the service.
 *
 * Nothing is ever written to fds 1 or 2 (they are the listening socket).
 *
 * usage: floor [IDLE_MS]      (default 200)
 * build: gcc -O2 -o floor floor.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_FD 0
#define HEAD_MAX 8192
#define READ_TIMEOUT_MS 5000

static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 6\r\n"
    "Connection: close\r\n"
    "\r\n"
    "hello\n";

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

int main(int argc, char **argv)
{
    long idle_ms = argc > 1 ? strtol(argv[1], NULL, 10) : 200;
    if (idle_ms <= 0)
        idle_ms = 200;

    /* A client that resets must not kill us with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);

    for (;;) {
        struct pollfd p = { .fd = LISTEN_FD, .events = POLLIN };
        int r = poll(&p, 1, (int)idle_ms);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        if (r == 0)
            return 0; /* idle: exit so the supervisor re-arms */
        if (p.revents & (POLLERR | POLLNVAL))
            return 1;

        int c = accept4(LISTEN_FD, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
                continue;
            return 1;
        }
        if (read_head(c) == 0) {
            write_all(c, RESPONSE, sizeof RESPONSE - 1);
            shutdown(c, SHUT_WR);
        }
        close(c);
    }
}
