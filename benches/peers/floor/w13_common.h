/*
 * What W13's two floors (w13_http.c on epoll, w13_http_uring.c on
 * io_uring) share: the responses, the request scan, the listener and the
 * signals. Header-only; each floor is one translation unit.
 */
#ifndef W13_COMMON_H
#define W13_COMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

/* SIGTERM and SIGINT set `stop` (and interrupt the wait); SIGPIPE is ignored. */
static void install_signals(void) {
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* The two responses (404, 200), their date that of the current second:
 * formatted once a second, copied for each request. The same bytes as
 * examples/http_server.rs and the tokio peer send. */
static char responses[2][256];
static size_t response_len[2];
static time_t date_at = -1;

static void refresh_date(void) {
    time_t now = time(NULL);
    if (now == date_at) return;
    date_at = now;
    struct tm tm;
    char date[64];
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    for (int ok = 0; ok < 2; ok++) {
        const char *body = ok ? "Hello, World!" : "Not Found";
        int n = snprintf(responses[ok], sizeof responses[ok],
                         "HTTP/1.1 %s\r\ncontent-type: text/plain\r\ncontent-length: %zu\r\n"
                         "date: %s\r\n\r\n%s",
                         ok ? "200 OK" : "404 Not Found", strlen(body), date, body);
        response_len[ok] = (size_t)n;
    }
}

/* Answers every complete request in in[0..*in_len] ("\r\n\r\n"-terminated,
 * no body: `GET / ` gets 200, anything else 404), appending the responses
 * to out (capacity cap) and keeping the incomplete rest at in's start.
 * Returns how many it answered, or -1 if the responses do not fit or an
 * incomplete request fills all of in (in_cap). */
static int answer(char *in, size_t *in_len, size_t in_cap, char *out, size_t *out_len, size_t cap) {
    size_t start = 0;
    int answered = 0;
    for (;;) {
        char *end = memmem(in + start, *in_len - start, "\r\n\r\n", 4);
        if (!end) break;
        size_t head = (size_t)(end - (in + start)) + 4;
        int ok = head >= 6 && memcmp(in + start, "GET / ", 6) == 0;
        if (!answered) refresh_date();
        size_t n = response_len[ok];
        if (n > cap - *out_len) return -1;
        memcpy(out + *out_len, responses[ok], n);
        *out_len += n;
        answered++;
        start += head;
    }
    memmove(in, in + start, *in_len - start);
    *in_len -= start;
    return *in_len == in_cap ? -1 : answered;
}

/* A listening TCP socket (SOCK_CLOEXEC | extra_flags) on argv[1]
 * (IPv4 HOST:PORT, default 127.0.0.1:8080); exits 2 on a bad address,
 * 1 if it cannot listen. */
static int listen_on(int argc, char **argv, int extra_flags) {
    const char *arg = argc > 1 ? argv[1] : "127.0.0.1:8080";
    char host[64];
    const char *colon = strrchr(arg, ':');
    if (!colon || (size_t)(colon - arg) >= sizeof host) {
        fprintf(stderr, "usage: %s HOST:PORT\n", argv[0]);
        exit(2);
    }
    memcpy(host, arg, (size_t)(colon - arg));
    host[colon - arg] = 0;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "%s: not an IPv4 address: %s\n", argv[0], host);
        exit(2);
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | extra_flags, 0);
    int one = 1;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0
        || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1024) < 0) {
        perror("listen");
        exit(1);
    }
    return lfd;
}

#endif
