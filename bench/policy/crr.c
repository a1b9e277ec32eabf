/* crr: a small TCP connect-request-response load tool for bench/policy.sh (netperf TCP_CRR-like).
 *
 *   crr server PORT SECONDS            accept loop; per connection: read 1 byte, write 1 byte,
 *                                      wait for the client to close, close. Exits after SECONDS.
 *   crr crr HOST PORT SECONDS MAXCONN  one connection at a time: connect, write 1 byte, read 1
 *                                      byte, close; for SECONDS or MAXCONN connections, whichever
 *                                      ends first. Prints one JSON object: rate and latency.
 *   crr probe HOST PORT TIMEOUT_MS     one connection; exit 0 = connected and echoed, 1 = timed
 *                                      out (dropped), 3 = refused (passed, nobody listening),
 *                                      2 = other error.
 *
 * Every loop is bounded in count and in time. IPv4 only. Build: gcc -O2 -o crr crr.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void timeouts(int fd, int ms) {
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static struct sockaddr_in addr_of(const char *host, const char *port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(port));
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "crr: bad IPv4 address %s\n", host);
        exit(2);
    }
    return a;
}

static int server(const char *port, double seconds) {
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)seconds + 1);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = addr_of("0.0.0.0", port);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1024)) {
        perror("crr server");
        return 2;
    }
    double end = now() + seconds;
    while (now() < end) {
        struct pollfd p = {ls, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0)
            continue;
        int fd = accept(ls, NULL, NULL);
        if (fd < 0)
            continue;
        timeouts(fd, 1000);
        char c;
        if (read(fd, &c, 1) == 1 && write(fd, &c, 1) == 1) {
            /* The client closes first (its side keeps TIME_WAIT); wait for its FIN. */
            while (read(fd, &c, 1) > 0)
                ;
        }
        close(fd);
    }
    return 0;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One transaction: 0 ok, 1 timeout, 3 refused, 2 other. */
static int transaction(const struct sockaddr_in *a, int timeout_ms) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 2;
    timeouts(fd, timeout_ms);
    int rc = 0;
    char c = 'x';
    if (connect(fd, (const struct sockaddr *)a, sizeof *a)) {
        rc = errno == ECONNREFUSED ? 3 : (errno == EINPROGRESS || errno == EAGAIN || errno == ETIMEDOUT) ? 1 : 2;
    } else if (write(fd, &c, 1) != 1) {
        rc = 2;
    } else {
        ssize_t n = read(fd, &c, 1);
        rc = n == 1 ? 0 : (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) ? 1 : 2;
    }
    close(fd);
    return rc;
}

static int crr(const char *host, const char *port, double seconds, long maxconn) {
    struct sockaddr_in a = addr_of(host, port);
    if (maxconn < 1)
        maxconn = 1;
    double *lat = malloc(sizeof(double) * maxconn);
    long n = 0, errors = 0;
    double start = now(), end = start + seconds, t = start;
    while (n < maxconn && t < end && errors < 100) {
        double t0 = now();
        int rc = transaction(&a, 1000);
        t = now();
        if (rc)
            errors++;
        else
            lat[n++] = (t - t0) * 1e6;
    }
    double elapsed = t - start;
    qsort(lat, n, sizeof(double), cmp);
#define PCT(p) (n ? lat[(long)((n - 1) * (p))] : 0.0)
    printf("{\"conns\":%ld,\"seconds\":%.4f,\"conn_per_s\":%.1f,\"p50_us\":%.2f,\"p90_us\":%.2f,"
           "\"p99_us\":%.2f,\"errors\":%ld}\n",
           n, elapsed, elapsed > 0 ? n / elapsed : 0.0, PCT(0.50), PCT(0.90), PCT(0.99), errors);
    free(lat);
    return errors >= 100 ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "server"))
        return server(argv[2], atof(argv[3]));
    if (argc == 6 && !strcmp(argv[1], "crr"))
        return crr(argv[2], argv[3], atof(argv[4]), atol(argv[5]));
    if (argc == 5 && !strcmp(argv[1], "probe")) {
        struct sockaddr_in a = addr_of(argv[2], argv[3]);
        return transaction(&a, atoi(argv[4]));
    }
    fprintf(stderr, "usage: crr server PORT SECONDS | crr crr HOST PORT SECONDS MAXCONN | crr probe HOST PORT TIMEOUT_MS\n");
    return 2;
}
