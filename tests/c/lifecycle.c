/*
 * The life of streams and ports, through the C API: cancel and close with I/O pending, deassign
 * handing the fd back, deadlines, post and wakeup, the batch wait, the inline calls, an accept
 * series, connects, vectored I/O, many threads waiting at once, and the last cport_port_dec_ref
 * with I/O of every kind pending. Each I/O must end in exactly one completion that hands its
 * buffer back; run under valgrind by tests/c/run.sh, which also finds any access to a buffer
 * after the port gave it back or was freed.
 */
#include "check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

static void pair(cport_port *port, cport_isb *isb, int *peer, void *user) {
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK_OK(cport_assign_fd(port, sv[0], user, isb));
    *peer = sv[1];
}

/* Fills the peer's receive buffer and the stream's send buffer so that a write stays pending. */
static size_t fill_size(void) {
    return 8 << 20;
}

/* A blocking client connected to "127.0.0.1:port" text. */
static int client_to(const char *addr) {
    const char *colon = strrchr(addr, ':');
    CHECK(colon != NULL);
    struct sockaddr_in sin = {0};
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)atoi(colon + 1));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    CHECK(connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0, "connect: %s", strerror(errno));
    return fd;
}

static void cancel_both_sides(cport_port *port) {
    cport_isb isb;
    int peer;
    pair(port, &isb, &peer, (void *)0x11);
    char rbuf[32];
    size_t big = fill_size();
    char *wbuf = malloc(big);
    CHECK(wbuf != NULL);
    memset(wbuf, 'w', big);
    CHECK_OK(cport_read(port, isb, rbuf, 1, sizeof rbuf));
    CHECK_OK(cport_write(port, isb, wbuf, big)); /* more than the socket holds: stays pending */
    CHECK_NO_COMPLETION(port, 0);

    size_t n = 0;
    CHECK_OK(cport_cancel(port, isb, &n));
    CHECK_EQ(n, 2);
    int seen_read = 0, seen_write = 0;
    for (int i = 0; i < 2; i++) {
        cport_completion c;
        NEXT(port, 5000, &c);
        CHECK(c.user == (void *)0x11);
        CHECK_EQ(c.status, CPORT_STATUS_CANCELLED);
        CHECK_EQ(c.error, CPORT_ECANCELLED);
        if (c.op == CPORT_OP_READ) {
            seen_read++;
            CHECK(c.buf == rbuf);
            CHECK_EQ(c.bytes, 0);
        } else {
            seen_write++;
            CHECK_EQ(c.op, CPORT_OP_WRITE);
            CHECK(c.buf == wbuf);
            CHECK_EQ(c.buf_len, big);
            CHECK(c.bytes < big, "a cancelled write reports the bytes it sent: %zu", c.bytes);
        }
    }
    CHECK(seen_read == 1 && seen_write == 1);
    CHECK_NO_COMPLETION(port, 0);
    free(wbuf); /* the port gave it back: valgrind would see a later touch */

    /* Nothing pending: cancel finds nothing; the stream still works. */
    CHECK_OK(cport_cancel(port, isb, &n));
    CHECK_EQ(n, 0);
    CHECK_OK(cport_close(port, isb));
    cport_completion c;
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_CLOSE);
    close(peer);
}

static void close_with_io_pending(cport_port *port) {
    cport_isb isb;
    int peer;
    pair(port, &isb, &peer, (void *)0x12);
    char *rbuf = malloc(64);
    CHECK_OK(cport_read(port, isb, rbuf, 1, 64));
    CHECK_OK(cport_close(port, isb));
    /* The read ends as cancelled first; the close completion is the stream's last. */
    cport_completion c;
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_READ);
    CHECK_EQ(c.status, CPORT_STATUS_CANCELLED);
    CHECK(c.buf == rbuf);
    free(rbuf);
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_CLOSE);
    CHECK_EQ(c.status, CPORT_STATUS_OK);
    CHECK(c.user == (void *)0x12);
    CHECK_NO_COMPLETION(port, 0);
    /* The fd was closed: the peer reads end of stream. */
    char b;
    CHECK_EQ(read(peer, &b, 1), 0);
    close(peer);
}

static void deassign_hands_the_fd_back(cport_port *port) {
    cport_isb isb;
    int peer;
    pair(port, &isb, &peer, NULL);
    char rbuf[16];
    CHECK_OK(cport_read(port, isb, rbuf, 1, sizeof rbuf));
    int fd = -1;
    CHECK_OK(cport_deassign(port, isb, &fd));
    CHECK(fd >= 0);
    /* The pending read came back, cancelled, before cport_deassign returned. */
    cport_completion c;
    CHECK_OK(cport_next_completion(port, 0, &c));
    CHECK_EQ(c.op, CPORT_OP_READ);
    CHECK_EQ(c.status, CPORT_STATUS_CANCELLED);
    CHECK(c.buf == rbuf);
    CHECK_NO_COMPLETION(port, 0);
    /* The fd is open and the caller's: it still talks to the peer, and can be assigned again. */
    CHECK(write(fd, "back", 4) == 4);
    char b[4];
    CHECK(read(peer, b, 4) == 4 && memcmp(b, "back", 4) == 0);
    CHECK_OK(cport_assign_fd(port, fd, NULL, &isb));
    CHECK_OK(cport_read(port, isb, rbuf, 2, sizeof rbuf));
    CHECK(write(peer, "again", 5) == 5);
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_READ);
    CHECK_EQ(c.bytes, 5);
    CHECK(memcmp(rbuf, "again", 5) == 0);
    CHECK_OK(cport_deassign(port, isb, NULL)); /* NULL: the fd is closed */
    CHECK_EQ(read(peer, b, 1), 0);
    close(peer);
}

static void deadlines(cport_port *port) {
    cport_isb isb;
    int peer;
    pair(port, &isb, &peer, NULL);
    char rbuf[16];
    CHECK_OK(cport_read(port, isb, rbuf, 1, sizeof rbuf));
    CHECK_OK(cport_set_timeout(port, isb, 20));
    cport_completion c;
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_READ);
    CHECK_EQ(c.status, CPORT_STATUS_TIMED_OUT);
    CHECK_EQ(c.error, CPORT_ETIMEDOUT);
    CHECK(c.buf == rbuf);

    /* A deadline cleared before it fires ends nothing: the read completes with data. */
    CHECK_OK(cport_read(port, isb, rbuf, 1, sizeof rbuf));
    CHECK_OK(cport_set_timeout(port, isb, 30));
    CHECK_OK(cport_set_timeout(port, isb, -1));
    CHECK_NO_COMPLETION(port, 150);
    CHECK(write(peer, "late", 4) == 4);
    NEXT(port, 5000, &c);
    CHECK_EQ(c.status, CPORT_STATUS_OK);
    CHECK_EQ(c.bytes, 4);

    /* End of stream before the minimum. */
    CHECK_OK(cport_read(port, isb, rbuf, 8, sizeof rbuf));
    CHECK(write(peer, "abc", 3) == 3);
    close(peer);
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_READ);
    CHECK_EQ(c.status, CPORT_STATUS_EOF);
    CHECK_EQ(c.bytes, 3);
    CHECK(memcmp(rbuf, "abc", 3) == 0);
    CHECK_OK(cport_deassign(port, isb, NULL));
}

static void inline_and_vectored(cport_port *port) {
    cport_isb isb;
    int peer;
    pair(port, &isb, &peer, (void *)0x13);
    cport_completion done, c;

    /* Room in the send buffer: the write finishes at once and is not queued. */
    CHECK_OK(cport_write_inline(port, isb, "inline", 6, &done));
    CHECK_EQ(done.op, CPORT_OP_WRITE);
    CHECK_EQ(done.status, CPORT_STATUS_OK);
    CHECK_EQ(done.bytes, 6);
    CHECK(done.user == (void *)0x13);
    CHECK_NO_COMPLETION(port, 0);
    char b[16];
    CHECK(read(peer, b, 6) == 6 && memcmp(b, "inline", 6) == 0);

    /* Nothing to read yet: pending (op 0), and its completion comes through the port. */
    char rbuf[16];
    memset(&done, 0xab, sizeof done);
    CHECK_OK(cport_read_inline(port, isb, rbuf, 1, sizeof rbuf, &done));
    CHECK_EQ(done.op, 0);
    /* A refused start (the read side is busy) leaves done->op 0 too. */
    memset(&done, 0xab, sizeof done);
    CHECK_ERR(cport_read_inline(port, isb, rbuf, 1, sizeof rbuf, &done), CPORT_EBUSY);
    CHECK_EQ(done.op, 0);
    CHECK(write(peer, "xy", 2) == 2);
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_READ);
    CHECK_EQ(c.bytes, 2);
    /* Data already there. The last read drained the socket, so the port may wait for
     * readiness rather than try at once: either way the read ends once, with the byte. */
    CHECK(write(peer, "z", 1) == 1);
    CHECK_OK(cport_read_inline(port, isb, rbuf, 1, sizeof rbuf, &done));
    if (done.op == 0)
        NEXT(port, 5000, &done);
    CHECK_EQ(done.op, CPORT_OP_READ);
    CHECK_EQ(done.bytes, 1);
    CHECK_EQ(rbuf[0], 'z');
    CHECK_NO_COMPLETION(port, 0);

    /* A fresh stream with data waiting: the read is done at once. */
    cport_isb fresh;
    int fresh_peer;
    pair(port, &fresh, &fresh_peer, NULL);
    CHECK(write(fresh_peer, "now", 3) == 3);
    CHECK_OK(cport_read_inline(port, fresh, rbuf, 1, sizeof rbuf, &done));
    CHECK_EQ(done.op, CPORT_OP_READ);
    CHECK_EQ(done.bytes, 3);
    CHECK(memcmp(rbuf, "now", 3) == 0);
    CHECK_OK(cport_deassign(port, fresh, NULL));
    close(fresh_peer);

    /* Vectored: three pieces out, two buffers in, min = everything. */
    char a1[] = "one-", a2[] = "two-", a3[] = "three";
    struct iovec out[3] = {{a1, 4}, {a2, 4}, {a3, 5}};
    CHECK_OK(cport_writev(port, isb, out, 3));
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_WRITEV);
    CHECK_EQ(c.status, CPORT_STATUS_OK);
    CHECK_EQ(c.bytes, 13);
    CHECK(c.buf == NULL);
    char got[13];
    size_t have = 0;
    while (have < 13) {
        ssize_t r = read(peer, got + have, 13 - have);
        CHECK(r > 0);
        have += (size_t)r;
    }
    CHECK(memcmp(got, "one-two-three", 13) == 0);

    char p1[5], p2[8];
    struct iovec in[2] = {{p1, sizeof p1}, {p2, sizeof p2}};
    CHECK_OK(cport_readv(port, isb, in, 2, 13));
    CHECK(write(peer, "ABCDEFG", 7) == 7); /* less than the minimum: still pending */
    CHECK_NO_COMPLETION(port, 50);
    CHECK(write(peer, "HIJKLM", 6) == 6);
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_READV);
    CHECK_EQ(c.bytes, 13);
    CHECK(memcmp(p1, "ABCDE", 5) == 0 && memcmp(p2, "FGHIJKLM", 8) == 0);

    CHECK_OK(cport_close(port, isb));
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_CLOSE);
    close(peer);
}

static void accepts_and_connects(cport_port *port) {
    static char listener_tag, conn_tag;
    cport_isb listener;
    CHECK_OK(cport_listen(port, "127.0.0.1:0", &listener_tag, &listener));
    char addr[64];
    CHECK_OK(cport_local_addr(port, listener, addr, sizeof addr));

    /* A series of three: each completion says how many are left; a fourth client waits. */
    CHECK_OK(cport_accept(port, listener, 3));
    int clients[4];
    for (int i = 0; i < 4; i++)
        clients[i] = client_to(addr);
    cport_completion c;
    for (uint64_t left = 3; left-- > 0;) {
        NEXT(port, 5000, &c);
        CHECK_EQ(c.op, CPORT_OP_ACCEPT);
        CHECK_EQ(c.status, CPORT_STATUS_OK);
        CHECK(c.user == &listener_tag);
        CHECK_EQ(c.value, left);
        CHECK(c.accepted_fd >= 0);
        /* The caller owns the accepted fd: here it greets its client and closes. */
        CHECK(write(c.accepted_fd, "hello", 5) == 5);
        close(c.accepted_fd);
    }
    for (int i = 0; i < 3; i++) {
        char b[5];
        CHECK(read(clients[i], b, 5) == 5 && memcmp(b, "hello", 5) == 0);
    }
    CHECK_NO_COMPLETION(port, 100); /* the series is over */

    /* A connect through the port, accepted by a new series; the fourth client first. */
    cport_isb out;
    CHECK_OK(cport_connect(port, addr, &conn_tag, &out));
    CHECK_OK(cport_accept(port, listener, SIZE_MAX));
    int accepted = 0, connected = 0;
    while (accepted < 2 || !connected) {
        NEXT(port, 5000, &c);
        if (c.op == CPORT_OP_ACCEPT) {
            CHECK_EQ(c.status, CPORT_STATUS_OK);
            CHECK(c.accepted_fd >= 0);
            close(c.accepted_fd);
            accepted++;
        } else {
            CHECK_EQ(c.op, CPORT_OP_CONNECT);
            CHECK_EQ(c.status, CPORT_STATUS_OK);
            CHECK(c.user == &conn_tag);
            connected = 1;
        }
    }
    /* Closing the listener ends the series: its pending accept is cancelled. */
    CHECK_OK(cport_close(port, listener));
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_ACCEPT);
    CHECK_EQ(c.status, CPORT_STATUS_CANCELLED);
    CHECK_EQ(c.accepted_fd, -1);
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_CLOSE);
    CHECK(c.user == &listener_tag);

    /* Nobody listens there now: refused, as a completion. */
    CHECK_OK(cport_deassign(port, out, NULL));
    cport_isb refused;
    CHECK_OK(cport_connect(port, addr, NULL, &refused));
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_CONNECT);
    CHECK_EQ(c.status, CPORT_STATUS_FAILED);
    CHECK_EQ(c.os_error, ECONNREFUSED);
    CHECK_OK(cport_deassign(port, refused, NULL));
    for (int i = 0; i < 4; i++)
        close(clients[i]);
    CHECK_NO_COMPLETION(port, 0);
}

static void posts_and_batches(cport_port *port) {
    cport_completion c, batch[4];
    size_t n;
    CHECK_OK(cport_post(port, (void *)0x77, 42));
    NEXT(port, 0, &c);
    CHECK_EQ(c.op, CPORT_OP_POST);
    CHECK_EQ(c.status, CPORT_STATUS_OK);
    CHECK(c.user == (void *)0x77);
    CHECK_EQ(c.value, 42);
    CHECK(c.isb.port == 0 && c.isb.stream == 0);

    for (uint64_t i = 0; i < 10; i++)
        CHECK_OK(cport_post(port, NULL, i));
    uint64_t next = 0;
    while (next < 10) {
        CHECK_OK(cport_next_completions(port, 0, batch, 4, &n));
        CHECK(n >= 1 && n <= 4);
        for (size_t i = 0; i < n; i++)
            CHECK_EQ(batch[i].value, next++); /* one thread: in the order posted */
    }
    CHECK_EQ(cport_next_completions(port, 0, batch, 4, &n), CPORT_ETIMEDOUT);
    CHECK_EQ(n, 0);

    /* A wakeup with nobody waiting: the next wait returns at once, after what is queued. */
    CHECK_OK(cport_post(port, NULL, 7));
    CHECK_OK(cport_wakeup(port));
    NEXT(port, -1, &c);
    CHECK_EQ(c.value, 7);
    CHECK_EQ(cport_next_completion(port, -1, &c), CPORT_EWOKEN);
    CHECK_NO_COMPLETION(port, 0);

    /* The batch form tells a wakeup from a timeout, with a finite timeout as with none. */
    CHECK_OK(cport_wakeup(port));
    n = 9;
    CHECK_EQ(cport_next_completions(port, 5000, batch, 4, &n), CPORT_EWOKEN);
    CHECK_EQ(n, 0);
    CHECK_OK(cport_wakeup(port));
    n = 9;
    CHECK_EQ(cport_next_completions(port, -1, batch, 4, &n), CPORT_EWOKEN);
    CHECK_EQ(n, 0);
    n = 9;
    CHECK_EQ(cport_next_completions(port, 1, batch, 4, &n), CPORT_ETIMEDOUT);
    CHECK_EQ(n, 0);
}

/* ---- many threads waiting at once ---- */

#define WAITERS 4
#define POSTS 20000

struct waiters {
    cport_port *port;
    atomic_uchar taken[POSTS];
    atomic_int woken;
    atomic_int per_thread[WAITERS];
};

struct waiter_arg {
    struct waiters *w;
    int id;
};

static void *waiter(void *arg) {
    struct waiter_arg *a = arg;
    cport_port *port = a->w->port; /* this thread's own reference */
    cport_completion c;
    for (;;) {
        int r = cport_next_completion(port, -1, &c);
        if (r == CPORT_ECLOSED)
            break;
        if (r == CPORT_EWOKEN) {
            atomic_fetch_add(&a->w->woken, 1);
            continue;
        }
        CHECK_OK(r);
        CHECK_EQ(c.op, CPORT_OP_POST);
        CHECK(c.value < POSTS);
        CHECK_EQ(atomic_fetch_add(&a->w->taken[c.value], 1), 0); /* exactly once */
        atomic_fetch_add(&a->w->per_thread[a->id], 1);
    }
    cport_port_dec_ref(port);
    return NULL;
}

static void many_waiters(void) {
    cport_options o = {.threads = 0};
    struct waiters *w = calloc(1, sizeof *w);
    w->port = cport_create_port(&o);
    CHECK(w->port != NULL);
    pthread_t t[WAITERS];
    struct waiter_arg args[WAITERS];
    for (int i = 0; i < WAITERS; i++) {
        args[i] = (struct waiter_arg){w, i};
        CHECK(cport_port_inc_ref(w->port) == w->port);
        CHECK(pthread_create(&t[i], NULL, waiter, &args[i]) == 0);
    }
    for (uint64_t i = 0; i < POSTS; i++)
        CHECK_OK(cport_post(w->port, NULL, i));
    /* Wait (on the counters) until every post was taken, then wake the waiters one at a
     * time: each wakeup wakes exactly one. */
    for (;;) {
        int total = 0;
        for (int i = 0; i < WAITERS; i++)
            total += atomic_load(&w->per_thread[i]);
        if (total == POSTS)
            break;
        sched_yield();
    }
    for (int k = 1; k <= WAITERS; k++) {
        CHECK_OK(cport_wakeup(w->port));
        while (atomic_load(&w->woken) < k)
            sched_yield();
    }
    CHECK_OK(cport_shutdown(w->port));
    for (int i = 0; i < WAITERS; i++)
        CHECK(pthread_join(t[i], NULL) == 0);
    for (uint64_t i = 0; i < POSTS; i++)
        CHECK_EQ(atomic_load(&w->taken[i]), 1);
    printf("lifecycle: %d waiters took", WAITERS);
    for (int i = 0; i < WAITERS; i++)
        printf(" %d", atomic_load(&w->per_thread[i]));
    printf(" posts; %d wakeups seen\n", atomic_load(&w->woken));
    CHECK_EQ(atomic_load(&w->woken), WAITERS);
    cport_port_dec_ref(w->port);
    free(w);
}

/* ---- the last reference goes with I/O of every kind pending ---- */

static void *blocked_waiter(void *arg) {
    cport_port *port = arg;
    cport_completion c;
    int r;
    /* Takes what comes until the port shuts down under it. */
    while ((r = cport_next_completion(port, -1, &c)) == CPORT_OK || r == CPORT_EWOKEN)
        if (r == CPORT_OK && c.op == CPORT_OP_ACCEPT && c.accepted_fd >= 0)
            close(c.accepted_fd); /* a taken accept's fd is the caller's */
    CHECK_EQ(r, CPORT_ECLOSED);
    cport_port_dec_ref(port);
    return NULL;
}

/* With `waiter`, a thread holding its own reference waits in cport_next_completion; the main
 * thread shuts the port down and drops its reference, so the waiter's, dropped after it saw
 * CPORT_ECLOSED, is the last. Without, the main thread's reference is the only one. */
static void last_dec_ref_with_io_pending(uint32_t threads, int waiter) {
    cport_options o = {.threads = threads};
    cport_port *port = cport_create_port(&o);
    CHECK(port != NULL);

    enum { STREAMS = 8 };
    int peers[STREAMS];
    char *bufs[STREAMS];
    size_t big = fill_size();
    for (int i = 0; i < STREAMS; i++) {
        cport_isb isb;
        pair(port, &isb, &peers[i], NULL);
        bufs[i] = malloc(big);
        CHECK(bufs[i] != NULL);
        if (i % 2 == 0) {
            CHECK_OK(cport_read(port, isb, bufs[i], 1, 4096));
        } else {
            memset(bufs[i], 'x', big);
            CHECK_OK(cport_write(port, isb, bufs[i], big)); /* stays pending: the peer never reads */
            CHECK_OK(cport_read(port, isb, bufs[i] + big - 64, 64, 64));
        }
    }
    /* A listener with an accept series, a connection accepted but its completion never taken,
     * a connect in flight, a deadline armed, and a post nobody takes. */
    cport_isb listener;
    CHECK_OK(cport_listen(port, "127.0.0.1:0", NULL, &listener));
    char addr[64];
    CHECK_OK(cport_local_addr(port, listener, addr, sizeof addr));
    int client = client_to(addr);
    CHECK_OK(cport_accept(port, listener, SIZE_MAX));
    cport_isb outgoing;
    CHECK_OK(cport_connect(port, addr, NULL, &outgoing));
    CHECK_OK(cport_set_timeout(port, listener, 60000));
    CHECK_OK(cport_post(port, NULL, 1));

    if (waiter) {
        pthread_t t;
        CHECK(pthread_create(&t, NULL, blocked_waiter, cport_port_inc_ref(port)) == 0);
        CHECK_OK(cport_shutdown(port));
        cport_port_dec_ref(port);
        CHECK(pthread_join(t, NULL) == 0);
    } else {
        cport_port_dec_ref(port); /* the last: no hang, everything released */
    }

    /* Every peer sees its stream's fd closed, and the client its accepted connection's. */
    for (int i = 0; i < STREAMS; i++) {
        char b[4096];
        ssize_t r;
        while ((r = read(peers[i], b, sizeof b)) > 0)
            ;
        CHECK_EQ(r, 0);
        close(peers[i]);
    }
    char b;
    ssize_t r = read(client, &b, 1);
    CHECK(r == 0 || (r < 0 && errno == ECONNRESET), "the accepted connection was closed: %zd", r);
    close(client);
    /* The port is gone: the buffers are the caller's again. Freeing them is the last word; a
     * later touch by the library would be an invalid access under valgrind. */
    for (int i = 0; i < STREAMS; i++) {
        memset(bufs[i], 0, 64);
        free(bufs[i]);
    }
}

int main(void) {
    test_start("lifecycle", 60);
    cport_port *port = cport_create_port(NULL);
    CHECK(port != NULL);
    cancel_both_sides(port);
    close_with_io_pending(port);
    deassign_hands_the_fd_back(port);
    deadlines(port);
    inline_and_vectored(port);
    accepts_and_connects(port);
    posts_and_batches(port);
    cport_port_dec_ref(port);

    many_waiters();
    last_dec_ref_with_io_pending(0, 0);
    last_dec_ref_with_io_pending(2, 0);
    last_dec_ref_with_io_pending(0, 1);
    last_dec_ref_with_io_pending(2, 1);
    test_pass();
    return 0;
}
