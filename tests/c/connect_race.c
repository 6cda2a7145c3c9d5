/*
 * cport_connect's handle is written before the connect can complete.
 *
 * A client keeps its per-connection block from the connect to the stream's CLOSE completion,
 * and lets cport_connect write the stream's handle into that block (conn->isb). Four threads
 * take completions: a CONNECT completion checks that conn->isb already names its stream and
 * closes it; the CLOSE completion frees the block. The listener, on the same port, accepts
 * and closes every connection. With the handle written after the connect started, a
 * completion can be taken first (conn->isb still zero: the check fails), and the handle can
 * even be written into a block already freed (valgrind's invalid write; without valgrind,
 * malloc's own checks abort). Run with no workers and with two, each plainly, under
 * valgrind and under AddressSanitizer (tests/c/run.sh).
 */
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define TAKERS 4

struct conn {
    cport_isb isb; /* written by cport_connect */
    long id;
};

static char listener_tag;
static atomic_long connected, closed, accepted, in_use;
static long total;

static void *taker(void *arg) {
    cport_port *port = arg;
    for (;;) {
        cport_completion c;
        int r = cport_next_completion(port, -1, &c);
        if (r == CPORT_ECLOSED)
            break;
        CHECK_OK(r);
        if (c.user == &listener_tag) {
            if (c.op == CPORT_OP_ACCEPT && c.status == CPORT_STATUS_OK) {
                close(c.accepted_fd);
                atomic_fetch_add(&accepted, 1);
            }
            continue;
        }
        struct conn *conn = c.user;
        switch (c.op) {
        case CPORT_OP_CONNECT:
            /* The handle cport_connect wrote is there before its completion can be taken. */
            CHECK(conn->isb.port == c.isb.port && conn->isb.stream == c.isb.stream,
                  "connection %ld: CONNECT taken before cport_connect wrote the handle (%llu:%llu, want %llu:%llu)",
                  conn->id, (unsigned long long)conn->isb.port, (unsigned long long)conn->isb.stream,
                  (unsigned long long)c.isb.port, (unsigned long long)c.isb.stream);
            CHECK_EQ(c.status, CPORT_STATUS_OK);
            atomic_fetch_add(&connected, 1);
            CHECK_OK(cport_close(port, conn->isb));
            break;
        case CPORT_OP_CLOSE:
            free(conn); /* the handler owns the block until here */
            atomic_fetch_add(&closed, 1);
            atomic_fetch_sub(&in_use, 1);
            break;
        default:
            CHECK(0, "unexpected op %d", c.op);
        }
    }
    cport_port_dec_ref(port);
    return NULL;
}

static void run(uint32_t workers, int unix_socket) {
    atomic_store(&connected, 0);
    atomic_store(&closed, 0);
    atomic_store(&accepted, 0);
    atomic_store(&in_use, 0);
    cport_options o = {.threads = workers};
    cport_port *port = cport_create_port(&o);
    CHECK(port != NULL);
    cport_isb listener;
    char addr[128];
    if (unix_socket) {
        /* A Unix connect completes inside cport_connect: its completion is queued at once. */
        snprintf(addr, sizeof addr, "unix:/tmp/cport-connect-race-%d.sock", (int)getpid());
        unlink(addr + 5);
        CHECK_OK(cport_listen(port, addr, &listener_tag, &listener));
    } else {
        CHECK_OK(cport_listen(port, "127.0.0.1:0", &listener_tag, &listener));
        CHECK_OK(cport_local_addr(port, listener, addr, sizeof addr));
    }
    CHECK_OK(cport_accept(port, listener, SIZE_MAX));

    pthread_t t[TAKERS];
    for (int i = 0; i < TAKERS; i++)
        CHECK(pthread_create(&t[i], NULL, taker, cport_port_inc_ref(port)) == 0);

    for (long i = 0; i < total; i++) {
        /* At most 64 connections at once: the listener's backlog and the fds stay small. */
        while (atomic_load(&in_use) >= 64)
            sched_yield();
        struct conn *conn = calloc(1, sizeof *conn);
        CHECK(conn != NULL);
        conn->id = i;
        atomic_fetch_add(&in_use, 1);
        CHECK_OK(cport_connect(port, addr, conn, &conn->isb));
        /* conn may be freed from here on: the takers own it. */
    }
    while (atomic_load(&closed) < total)
        sched_yield();
    CHECK_EQ(atomic_load(&connected), total);
    CHECK_OK(cport_shutdown(port));
    for (int i = 0; i < TAKERS; i++)
        CHECK(pthread_join(t[i], NULL) == 0);
    CHECK_EQ(atomic_load(&closed), total);
    cport_port_dec_ref(port);
    if (unix_socket)
        unlink(addr + 5);
}

int main(void) {
    test_start("connect_race", 120);
    const char *conns = getenv("CPORT_TEST_CONNS");
    total = conns && atol(conns) > 0 ? atol(conns) * 10 : 2000;
    for (int unix_socket = 0; unix_socket < 2; unix_socket++) {
        run(0, unix_socket);
        run(2, unix_socket);
    }
    test_pass();
    return 0;
}
