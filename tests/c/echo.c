/*
 * An echo server and its clients, both on cport, under load.
 *
 * The server: a listener on 127.0.0.1:0 with one accept series (SIZE_MAX); each accepted fd
 * is assigned with its own heap block (user pointer, buffer of 100 B .. 16 KiB) and echoed:
 * read min 1 max N, write back exactly those bytes, read again; EOF closes the stream, and the
 * block is freed on its CLOSE completion. SERVER_THREADS threads wait on the port at once.
 *
 * The clients: CPORT_TEST_CONNS (default 300) connections driven from a second port by
 * CLIENT_THREADS threads. Each sends a deterministic stream (1 B .. 64 KiB, some 1 MiB) in
 * chunks of random sizes while reading the echo back at the same time (both sides of one
 * stream pending at once), and checks every byte, in order, and the total. Some use
 * writev/readv with 2-3 scattered iovecs. Most connect with cport_connect and cport_close at
 * the end; every 4th connects with a plain blocking socket with small socket buffers
 * (partial writes), is given to the port with cport_assign_fd, half-closes its write side
 * when all is sent, and must then see the echo, then EOF.
 *
 * Checked too: each completion goes to exactly one thread (a side's completions never run
 * at once: a per-side flag), each started I/O ends in exactly one completion (counts), the
 * completion names the stream of its user pointer and hands back the buffer lent, the server
 * saw every connection end (CLOSE count) and every byte, the listener's series ends with one
 * cancelled accept at shutdown, the waiters then get CPORT_ECLOSED, and no leak (valgrind).
 */
#include "check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#define SERVER_THREADS 4
#define CLIENT_THREADS 2
#define CHUNK 32768   /* the largest client write or read */
#define GAP 16        /* bytes left out between the iovecs of one vectored I/O */
#define PAT_LEN 65521 /* a prime: the streams' pattern */

/* ---- the streams' contents: connection `id` sends pattern[(id * 7919 + off) % PAT_LEN] ---- */

static unsigned char pattern[PAT_LEN];

static uint64_t rng(uint64_t *s) { /* xorshift64* */
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

/* Copies (to_buf) or compares (else) bytes [off, off+len) of connection id's stream. */
static int stream_bytes(unsigned id, uint64_t off, unsigned char *p, size_t len, int to_buf) {
    size_t at = (size_t)((off + id * 7919ULL) % PAT_LEN);
    while (len > 0) {
        size_t k = len < PAT_LEN - at ? len : PAT_LEN - at;
        if (to_buf)
            memcpy(p, pattern + at, k);
        else if (memcmp(p, pattern + at, k) != 0)
            return 0;
        p += k, len -= k, at = 0;
    }
    return 1;
}

/* ---- the server ---- */

struct sconn {
    cport_isb isb;
    atomic_int busy; /* a completion of this stream is being handled (one I/O at a time) */
    size_t cap, echoing;
    unsigned char buf[];
};

static char listener_tag; /* the listener's user pointer */
static atomic_long s_started, s_finished, s_accepts, s_accept_cancelled, s_closes, s_bytes_in, s_bytes_out;
static atomic_int s_shutting_down;

static void server_read(cport_port *port, struct sconn *s) {
    atomic_fetch_add(&s_started, 1);
    atomic_store(&s->busy, 0); /* from here on the next completion may go to any thread */
    CHECK_OK(cport_read(port, s->isb, s->buf, 1, s->cap));
}

static void server_handle(cport_port *port, const cport_completion *c) {
    if (c->user == &listener_tag) {
        CHECK_EQ(c->op, CPORT_OP_ACCEPT);
        if (c->status == CPORT_STATUS_CANCELLED) { /* the series ends at shutdown, only then */
            CHECK(atomic_load(&s_shutting_down), "accept cancelled before shutdown");
            atomic_fetch_add(&s_accept_cancelled, 1);
            return;
        }
        CHECK(c->status == CPORT_STATUS_OK && c->accepted_fd >= 0, "accept: status %d error %d os_error %d",
              c->status, c->error, c->os_error);
        static const size_t caps[] = {100, 1500, 4096, 16384};
        size_t cap = caps[atomic_fetch_add(&s_accepts, 1) % 4];
        struct sconn *s = calloc(1, sizeof *s + cap);
        CHECK(s != NULL);
        s->cap = cap;
        /* An echo of small pieces under Nagle waits for the client's delayed ACK (40 ms). */
        int one = 1;
        CHECK(setsockopt(c->accepted_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
        CHECK_OK(cport_assign_fd(port, c->accepted_fd, s, &s->isb));
        server_read(port, s);
        return;
    }
    struct sconn *s = c->user;
    CHECK(c->isb.port == s->isb.port && c->isb.stream == s->isb.stream, "a completion of another stream");
    if (c->op == CPORT_OP_CLOSE) { /* the stream's last completion: the block is ours again */
        CHECK_EQ(atomic_load(&s->busy), 0);
        atomic_fetch_add(&s_closes, 1);
        free(s);
        return;
    }
    CHECK(atomic_exchange(&s->busy, 1) == 0, "two completions of one server stream handled at once");
    atomic_fetch_add(&s_finished, 1);
    CHECK(c->buf == s->buf, "the completion hands back the buffer lent");
    if (c->op == CPORT_OP_READ && c->status == CPORT_STATUS_OK) {
        CHECK(c->bytes >= 1 && c->bytes <= s->cap && c->buf_len == s->cap);
        atomic_fetch_add(&s_bytes_in, (long)c->bytes);
        s->echoing = c->bytes;
        atomic_fetch_add(&s_started, 1);
        atomic_store(&s->busy, 0);
        CHECK_OK(cport_write(port, s->isb, s->buf, c->bytes)); /* exactly what was read */
    } else if (c->op == CPORT_OP_READ) { /* the client is done: it closed or half-closed */
        CHECK(c->status == CPORT_STATUS_EOF && c->bytes == 0, "server read: status %d error %d os_error %d",
              c->status, c->error, c->os_error);
        atomic_store(&s->busy, 0);
        CHECK_OK(cport_close(port, s->isb));
    } else {
        CHECK_EQ(c->op, CPORT_OP_WRITE);
        CHECK(c->status == CPORT_STATUS_OK, "server write: status %d os_error %d", c->status, c->os_error);
        CHECK(c->bytes == s->echoing && c->buf_len == s->echoing, "a write sends all: %zu of %zu", c->bytes,
              s->echoing);
        atomic_fetch_add(&s_bytes_out, (long)c->bytes);
        server_read(port, s);
    }
}

/* ---- the clients ---- */

enum { R, W }; /* the two sides of a stream */

struct client {
    unsigned id;
    int vec_read, vec_write, half_close;
    int fd; /* half_close: the socket, for shutdown(SHUT_WR) */
    cport_isb isb;
    uint64_t total;
    atomic_int busy[2];    /* a completion of that side is being handled */
    atomic_int sides_done; /* the second side done closes the stream */
    /* Each side's state: touched only by the thread handling its completion (or starting it). */
    uint64_t recvd, rng_r, sent, rng_w;
    int eof_wanted, rn, wn;
    struct iovec riov[3], wiov[3];
    unsigned char rbuf[CHUNK + 3 * GAP], wbuf[CHUNK + 3 * GAP];
};

static atomic_long c_started, c_finished, c_closes, c_bytes_in;

/* Cuts `len` bytes of `base` into n (1..3) iovecs with GAP bytes between them. */
static int scatter(unsigned char *base, size_t len, int vectored, uint64_t *rs, struct iovec *iov) {
    int n = vectored && len >= 3 ? 2 + (int)(rng(rs) % 2) : 1;
    size_t left = len;
    for (int i = 0; i < n; i++) {
        size_t part = i == n - 1 ? left : 1 + rng(rs) % (left - (size_t)(n - 1 - i));
        iov[i] = (struct iovec){base, part};
        base += part + GAP, left -= part;
    }
    return n;
}

static void client_read(cport_port *port, struct client *k) {
    k->rn = scatter(k->rbuf, 1 + rng(&k->rng_r) % CHUNK, k->vec_read, &k->rng_r, k->riov);
    atomic_fetch_add(&c_started, 1);
    atomic_store(&k->busy[R], 0);
    if (k->vec_read)
        CHECK_OK(cport_readv(port, k->isb, k->riov, k->rn, 1));
    else
        CHECK_OK(cport_read(port, k->isb, k->riov[0].iov_base, 1, k->riov[0].iov_len));
}

static void client_write(cport_port *port, struct client *k) {
    size_t len = 1 + rng(&k->rng_w) % CHUNK;
    if (len > k->total - k->sent)
        len = (size_t)(k->total - k->sent);
    k->wn = scatter(k->wbuf, len, k->vec_write, &k->rng_w, k->wiov);
    uint64_t off = k->sent;
    for (int i = 0; i < k->wn; off += k->wiov[i++].iov_len)
        stream_bytes(k->id, off, k->wiov[i].iov_base, k->wiov[i].iov_len, 1);
    atomic_fetch_add(&c_started, 1);
    atomic_store(&k->busy[W], 0);
    if (k->vec_write)
        CHECK_OK(cport_writev(port, k->isb, k->wiov, k->wn));
    else
        CHECK_OK(cport_write(port, k->isb, k->wiov[0].iov_base, len));
}

/* The connection is up: its reads and writes run at once from now on. */
static void client_start(cport_port *port, struct client *k) {
    client_read(port, k), client_write(port, k);
}

/* One side is done; the second one closes the stream (k may be freed once it returns). */
static void side_done(cport_port *port, struct client *k, int side) {
    atomic_store(&k->busy[side], 0);
    if (atomic_fetch_add(&k->sides_done, 1) == 1)
        CHECK_OK(cport_close(port, k->isb));
}

static void client_read_done(cport_port *port, struct client *k, const cport_completion *c) {
    CHECK(atomic_exchange(&k->busy[R], 1) == 0, "conn %u: two read completions handled at once", k->id);
    atomic_fetch_add(&c_finished, 1);
    CHECK_EQ(c->op, k->vec_read ? CPORT_OP_READV : CPORT_OP_READ);
    CHECK(k->vec_read ? c->buf == NULL : c->buf == k->riov[0].iov_base && c->buf_len == k->riov[0].iov_len);
    if (c->status == CPORT_STATUS_EOF) { /* the server closed: only after our half-close */
        CHECK(k->eof_wanted && c->bytes == 0, "conn %u: EOF after %llu of %llu bytes", k->id,
              (unsigned long long)k->recvd, (unsigned long long)k->total);
        side_done(port, k, R);
        return;
    }
    CHECK(c->status == CPORT_STATUS_OK, "conn %u: read status %d error %d os_error %d", k->id, c->status,
          c->error, c->os_error);
    CHECK(c->bytes >= 1 && k->recvd + c->bytes <= k->total, "conn %u: %zu bytes more after %llu of %llu",
          k->id, c->bytes, (unsigned long long)k->recvd, (unsigned long long)k->total);
    size_t left = c->bytes; /* the iovecs fill in order */
    for (int i = 0; i < k->rn && left > 0; i++) {
        size_t part = left < k->riov[i].iov_len ? left : k->riov[i].iov_len;
        CHECK(stream_bytes(k->id, k->recvd, k->riov[i].iov_base, part, 0),
              "conn %u: wrong bytes echoed in [%llu, +%zu)", k->id, (unsigned long long)k->recvd, part);
        k->recvd += part, left -= part;
    }
    atomic_fetch_add(&c_bytes_in, (long)c->bytes);
    if (k->recvd < k->total || k->half_close) {
        k->eof_wanted = k->recvd == k->total;
        client_read(port, k);
    } else {
        side_done(port, k, R);
    }
}

static void client_write_done(cport_port *port, struct client *k, const cport_completion *c) {
    CHECK(atomic_exchange(&k->busy[W], 1) == 0, "conn %u: two write completions handled at once", k->id);
    atomic_fetch_add(&c_finished, 1);
    CHECK_EQ(c->op, k->vec_write ? CPORT_OP_WRITEV : CPORT_OP_WRITE);
    CHECK(k->vec_write ? c->buf == NULL : c->buf == k->wiov[0].iov_base);
    size_t len = 0;
    for (int i = 0; i < k->wn; i++)
        len += k->wiov[i].iov_len;
    CHECK(c->status == CPORT_STATUS_OK && c->bytes == len, "conn %u: write status %d os_error %d, %zu of %zu",
          k->id, c->status, c->os_error, c->bytes, len);
    k->sent += len;
    if (k->sent < k->total) {
        client_write(port, k);
        return;
    }
    /* The port owns the fd, but a shutdown(2) of its write side is no I/O of the port's. */
    if (k->half_close)
        CHECK(shutdown(k->fd, SHUT_WR) == 0, "shutdown: %s", strerror(errno));
    side_done(port, k, W);
}

static void client_handle(cport_port *port, const cport_completion *c) {
    struct client *k = c->user;
    CHECK(k != NULL && c->isb.port != 0);
    if (c->op == CPORT_OP_CONNECT) {
        CHECK(c->status == CPORT_STATUS_OK, "connect: status %d os_error %d", c->status, c->os_error);
        k->isb = c->isb; /* not the out pointer of cport_connect: this completion may come first */
        client_start(port, k);
        return;
    }
    CHECK(c->isb.stream == k->isb.stream, "a completion of another stream");
    switch (c->op) {
    case CPORT_OP_READ:
    case CPORT_OP_READV:
        client_read_done(port, k, c);
        break;
    case CPORT_OP_WRITE:
    case CPORT_OP_WRITEV:
        client_write_done(port, k, c);
        break;
    case CPORT_OP_CLOSE: /* last: both sides done, every byte back, nothing of k lent any more */
        CHECK(atomic_load(&k->busy[R]) == 0 && atomic_load(&k->busy[W]) == 0);
        CHECK(atomic_load(&k->sides_done) == 2 && k->recvd == k->total && k->sent == k->total);
        free(k);
        atomic_fetch_add(&c_closes, 1);
        break;
    default:
        CHECK(0, "unexpected client op %d", c->op);
    }
}

/* Starts connection `id` (its length, its kind, how it connects); returns its length. */
static uint64_t client_new(cport_port *port, unsigned id, const char *addr, struct sockaddr_in *sin) {
    struct client *k = calloc(1, sizeof *k);
    CHECK(k != NULL);
    k->id = id;
    k->rng_r = 0x9E3779B97F4A7C15ULL * (id + 1);
    k->rng_w = k->rng_r ^ 0xD1B54A32D192ED03ULL;
    uint64_t r = rng(&k->rng_w);
    uint64_t total = k->total = id % 16 == 5 ? 1u << 20 : id % 16 == 9 ? 1 : 1 + r % 65536;
    k->vec_write = id % 3 == 1;
    k->vec_read = id % 5 == 2;
    k->half_close = id % 4 == 3;
    if (!k->half_close) {
        cport_isb ignored; /* the CONNECT completion carries it (see client_handle) */
        CHECK_OK(cport_connect(port, addr, k, &ignored));
        return total;
    }
    k->fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(k->fd >= 0);
    int small = 4096; /* partial writes and reads */
    CHECK(setsockopt(k->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    CHECK(setsockopt(k->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
    CHECK(connect(k->fd, (struct sockaddr *)sin, sizeof *sin) == 0, "connect: %s", strerror(errno));
    CHECK_OK(cport_assign_fd(port, k->fd, k, &k->isb));
    client_start(port, k);
    return total; /* k may be freed already */
}

/* ---- the waiting threads, shared by both ports ---- */

struct worker {
    pthread_t tid;
    cport_port *port; /* this thread's own reference */
    void (*handle)(cport_port *, const cport_completion *);
    long handled;
};

static void *work(void *arg) {
    struct worker *w = arg;
    cport_completion c;
    for (;;) {
        int r = cport_next_completion(w->port, -1, &c);
        if (r == CPORT_ECLOSED)
            break; /* shut down and drained */
        CHECK(r == CPORT_OK, "cport_next_completion: %d (%s)", r, cport_strerror(r));
        w->handle(w->port, &c);
        w->handled++;
    }
    cport_port_dec_ref(w->port);
    return NULL;
}

static void start_workers(struct worker *w, int n, cport_port *port,
                          void (*handle)(cport_port *, const cport_completion *)) {
    for (int i = 0; i < n; i++) {
        w[i] = (struct worker){.port = cport_port_inc_ref(port), .handle = handle};
        CHECK(w[i].port == port);
        CHECK(pthread_create(&w[i].tid, NULL, work, &w[i]) == 0);
    }
}

static long join_workers(struct worker *w, int n, const char *what) {
    long sum = 0;
    for (int i = 0; i < n; i++) {
        CHECK(pthread_join(w[i].tid, NULL) == 0);
        printf("echo: %s thread %d handled %ld completions\n", what, i, w[i].handled);
        sum += w[i].handled;
    }
    return sum;
}

static void wait_for(atomic_long *v, long want) { /* the watchdog ends a hang */
    while (atomic_load(v) < want)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
}

/* Two fds per connection (client and server side) and some for the ports and valgrind. */
static unsigned fit_fd_limit(unsigned conns) {
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    rlim_t need = 2 * (rlim_t)conns + 64;
    if (rl.rlim_cur < need) {
        rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
        CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit: %s", strerror(errno));
    }
    if (rl.rlim_cur < need) {
        unsigned fit = rl.rlim_cur > 84 ? (unsigned)((rl.rlim_cur - 64) / 2) : 10;
        printf("echo: RLIMIT_NOFILE hard limit %llu is too low for %u connections: using %u\n",
               (unsigned long long)rl.rlim_max, conns, fit);
        return fit;
    }
    return conns;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(void) {
    test_start("echo", 60);
    const char *env = getenv("CPORT_TEST_CONNS");
    unsigned conns = env && atoi(env) > 0 ? (unsigned)atoi(env) : 300;
    conns = fit_fd_limit(conns);
    uint64_t seed = 42;
    for (size_t i = 0; i < PAT_LEN; i++)
        pattern[i] = (unsigned char)(rng(&seed) >> 56);

    cport_port *server = cport_create_port(NULL);
    cport_port *client = cport_create_port(NULL);
    CHECK(server && client);
    cport_isb listener;
    char addr[64];
    CHECK_OK(cport_listen(server, "127.0.0.1:0", &listener_tag, &listener));
    CHECK_OK(cport_local_addr(server, listener, addr, sizeof addr));
    CHECK_OK(cport_accept(server, listener, SIZE_MAX));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    sin.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));

    struct worker sw[SERVER_THREADS], cw[CLIENT_THREADS];
    start_workers(sw, SERVER_THREADS, server, server_handle);
    start_workers(cw, CLIENT_THREADS, client, client_handle);

    double t0 = now_ms();
    long expected = 0;
    for (unsigned id = 0; id < conns; id++) {
        /* cport_listen's backlog is 128: a burst beyond it loses SYNs, retried after 1 s. */
        wait_for(&s_accepts, (long)id - 64);
        expected += (long)client_new(client, id, addr, &sin);
    }

    /* Every client got its whole stream back and closed; then the server saw every end. */
    wait_for(&c_closes, conns);
    CHECK_OK(cport_shutdown(client));
    long c_handled = join_workers(cw, CLIENT_THREADS, "client");
    wait_for(&s_closes, conns);
    double t1 = now_ms();
    atomic_store(&s_shutting_down, 1);
    CHECK_OK(cport_shutdown(server));
    long s_handled = join_workers(sw, SERVER_THREADS, "server");

    CHECK_EQ(atomic_load(&c_bytes_in), expected);
    CHECK_EQ(atomic_load(&c_started), atomic_load(&c_finished)); /* one completion per I/O */
    CHECK_EQ(c_handled, atomic_load(&c_finished) + 2 * (long)conns - conns / 4); /* + connects, closes */
    CHECK_EQ(atomic_load(&s_accepts), conns);
    CHECK_EQ(atomic_load(&s_accept_cancelled), 1);
    CHECK_EQ(atomic_load(&s_closes), conns);
    CHECK_EQ(atomic_load(&s_bytes_in), expected);
    CHECK_EQ(atomic_load(&s_bytes_out), expected);
    CHECK_EQ(atomic_load(&s_started), atomic_load(&s_finished));
    CHECK_EQ(s_handled, atomic_load(&s_finished) + 2 * (long)conns + 1); /* + accepts, closes, cancel */
    printf("echo: %u connections, %ld bytes echoed in %.0f ms\n", conns, expected, t1 - t0);

    cport_port_dec_ref(client);
    cport_port_dec_ref(server);
    test_pass();
    return 0;
}
