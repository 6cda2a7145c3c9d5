/*
 * A TCP echo server in C on cport: every byte a client sends comes back.
 *
 *     examples/c/build.sh && target/c/echo_server [ADDR] [THREADS]
 *
 * ADDR defaults to 127.0.0.1:7878 (port 0: any free port). The first line on stdout is
 * "listening <addr>", with the address bound, once it serves. It serves until killed.
 *
 * THREADS threads (default 2) wait in cport_next_completion and do the I/O themselves; an
 * I/O that finishes at once (the echo's write, mostly) is handled by the thread that started
 * it (cport_write_inline), without a queue trip. Accepted sockets get TCP_NODELAY (an echo
 * must not wait for Nagle). Each connection is one heap block: its buffer, lent to the port
 * while an I/O runs, and the user pointer of its stream, so a completion leads straight to its
 * connection. The block is freed on the connection's Close completion, the stream's last.
 */
#include <cport.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE 16384

struct conn {
    cport_isb isb;
    char buf[BUF_SIZE];
};

static cport_port *port;
/* The listener's user pointer: what tells its completions from the connections'. */
static char listener_tag;

static void fail(const char *what, int err) {
    fprintf(stderr, "echo_server: %s: %s (%s)\n", what, cport_strerror(err), cport_last_error());
}

/* What one completion leads to. Returns 1 when the I/O it started finished at once, its
 * completion in *next (handled by the caller, without a queue trip). */
static int handle(const cport_completion *c, cport_completion *next) {
    if (c->user == &listener_tag) {
        if (c->op != CPORT_OP_ACCEPT || c->status != CPORT_STATUS_OK)
            return 0; /* a failed accept (EMFILE, ...): the series goes on after a rest */
        int one = 1; /* no Nagle delay for small echoes; a failure is harmless */
        setsockopt(c->accepted_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *conn = malloc(sizeof *conn);
        if (!conn) {
            close(c->accepted_fd); /* the fd is ours until assigned */
            return 0;
        }
        int err = cport_assign_fd(port, c->accepted_fd, conn, &conn->isb);
        if (err != CPORT_OK) {
            fail("assign", err); /* the port took the fd and closed it */
            free(conn);
            return 0;
        }
        err = cport_read_inline(port, conn->isb, conn->buf, 1, BUF_SIZE, next);
        if (err != CPORT_OK)
            cport_close(port, conn->isb);
        return err == CPORT_OK && next->op != 0;
    }
    struct conn *conn = c->user;
    int err = CPORT_EOS;
    switch (c->op) {
    case CPORT_OP_CLOSE:
        free(conn); /* the stream's last completion: the port no longer has its buffer */
        return 0;
    case CPORT_OP_READ:
        if (c->status == CPORT_STATUS_OK)
            err = cport_write_inline(port, conn->isb, conn->buf, c->bytes, next);
        break;
    case CPORT_OP_WRITE:
        if (c->status == CPORT_STATUS_OK)
            err = cport_read_inline(port, conn->isb, conn->buf, 1, BUF_SIZE, next);
        break;
    }
    if (err != CPORT_OK) {
        cport_close(port, conn->isb); /* end of stream, reset, error */
        return 0;
    }
    return next->op != 0;
}

static void *serve(void *arg) {
    (void)arg;
    cport_completion c, next;
    for (;;) {
        int err = cport_next_completion(port, -1, &c);
        if (err == CPORT_OK) {
            while (handle(&c, &next))
                c = next;
        } else if (err != CPORT_EWOKEN) {
            return NULL; /* CPORT_ECLOSED */
        }
    }
}

int main(int argc, char **argv) {
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1:7878";
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    if (threads < 1 || threads > 256) {
        fprintf(stderr, "usage: echo_server [ADDR] [THREADS]\n");
        return 2;
    }
    port = cport_create_port(NULL);
    if (!port) {
        fprintf(stderr, "echo_server: %s\n", cport_last_error());
        return 1;
    }
    cport_isb listener;
    char local[64];
    int err = cport_listen(port, addr, &listener_tag, &listener);
    if (err == CPORT_OK)
        err = cport_local_addr(port, listener, local, sizeof local);
    if (err == CPORT_OK)
        err = cport_accept(port, listener, SIZE_MAX);
    if (err != CPORT_OK) {
        fail(addr, err);
        return 1;
    }
    pthread_t tids[256];
    for (int i = 0; i < threads; i++)
        pthread_create(&tids[i], NULL, serve, NULL);
    /* Announced once the threads exist: whoever reads it finds the whole server (perf -p). */
    printf("listening %s\n", local);
    fflush(stdout);
    for (int i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    cport_port_dec_ref(port);
    return 0;
}
