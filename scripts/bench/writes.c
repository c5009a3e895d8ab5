/*
 * writes.c - what one small write to a loopback TCP socket costs, by system call: writev with
 * two buffers (a response head and a short body, as tokio writes what hyper hands over), sendmsg
 * with the same two, writev with one buffer, send with one, and the two copied into one for send
 * (what ondemand's src/socket_write.rs does).
 *
 * A reader thread drains the socket. Each variant writes 200,000 times; seven rounds of all
 * variants in turn; the best round of each is printed, in ns per write (the reader's share
 * included, the same for all). The socket has TCP_NODELAY, as ondemand's have.
 *
 * usage: writes            (both threads where the scheduler puts them)
 *        SPLIT=1 writes    (writer on CPU 0, reader on CPU 1)
 *        taskset -c 0 writes  (both on one CPU)
 * build: gcc -O2 -pthread -o writes writes.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define WRITES 200000
#define ROUNDS 7
#define VARIANTS 5

static int reader_fd;

static void pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        exit(1);
    }
}

static void *drain(void *unused) {
    (void)unused;
    char buf[65536];
    if (getenv("SPLIT"))
        pin_to(1);
    while (recv(reader_fd, buf, sizeof buf, 0) > 0) {
    }
    return NULL;
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(void) {
    struct sockaddr_in addr = {.sin_family = AF_INET};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int writer = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    if (listener < 0 || writer < 0 || bind(listener, (void *)&addr, sizeof addr) != 0 ||
        getsockname(listener, (void *)&addr, &len) != 0 || listen(listener, 1) != 0 ||
        connect(writer, (void *)&addr, sizeof addr) != 0 ||
        (reader_fd = accept(listener, NULL, NULL)) < 0 ||
        setsockopt(writer, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
        perror("loopback connection");
        return 1;
    }
    if (getenv("SPLIT"))
        pin_to(0);
    pthread_t reader;
    pthread_create(&reader, NULL, drain, NULL);

    char head[200], body[23], joined[sizeof head + sizeof body];
    memset(head, 'h', sizeof head);
    memset(body, 'b', sizeof body);
    struct iovec iov[2] = {{head, sizeof head}, {body, sizeof body}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    const char *names[VARIANTS] = {"writev, 2 buffers", "sendmsg, 2 buffers", "writev, 1 buffer",
                                   "send, 1 buffer", "2 buffers joined, send"};
    double best[VARIANTS];
    for (int v = 0; v < VARIANTS; v++)
        best[v] = 1e18;
    for (int round = 0; round < ROUNDS; round++) {
        for (int v = 0; v < VARIANTS; v++) {
            double start = now_ns();
            for (int i = 0; i < WRITES; i++) {
                ssize_t n = 0;
                switch (v) {
                case 0: n = writev(writer, iov, 2); break;
                case 1: n = sendmsg(writer, &msg, MSG_NOSIGNAL); break;
                case 2: n = writev(writer, iov, 1); break;
                case 3: n = send(writer, head, sizeof head, MSG_NOSIGNAL); break;
                case 4:
                    memcpy(joined, head, sizeof head);
                    memcpy(joined + sizeof head, body, sizeof body);
                    n = send(writer, joined, sizeof joined, MSG_NOSIGNAL);
                    break;
                }
                if (n <= 0) {
                    perror(names[v]);
                    return 1;
                }
            }
            double ns = (now_ns() - start) / WRITES;
            if (ns < best[v])
                best[v] = ns;
        }
    }
    for (int v = 0; v < VARIANTS; v++)
        printf("%-24s %6.0f ns per write\n", names[v], best[v]);
    return 0;
}
