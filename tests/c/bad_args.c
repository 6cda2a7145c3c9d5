/*
 * Bad handles and bad arguments: every function given a NULL port, NULL out pointers, an ISB
 * of another port, a stale ISB (closed, deassigned, its slot reused), an all-zero or garbage
 * ISB, bad fds, a regular file, NULL buffers, zero lengths, min > max, unparsable addresses, a
 * too-small address buffer, bad iovec counts, and calls after shutdown: each returns the
 * error class the header documents (exactly), leaves a message in cport_last_error(), starts
 * nothing, and does not crash. Run under valgrind by tests/c/run.sh.
 */
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>

static void clear_last_error(void) {
    /* cport_last_error keeps the last failure; a successful call does not clear it, so each
     * CHECK_ERR below sees a message set by its own call only if the text changes. Make it
     * recognisable instead: a failing call with a known message. */
    (void)cport_post(NULL, NULL, 0);
}

static int fd_is_open(int fd) {
    return fcntl(fd, F_GETFD) != -1;
}

static void strerror_of_every_class(void) {
    for (int code = CPORT_OK; code <= CPORT_EINTERNAL; code++) {
        const char *s = cport_strerror(code);
        CHECK(s != NULL && s[0] != '\0', "cport_strerror(%d) is empty", code);
    }
    const char *unknown[] = {cport_strerror(-1), cport_strerror(12), cport_strerror(1 << 30)};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++)
        CHECK(unknown[i] != NULL && unknown[i][0] != '\0');
}

static void null_port(void) {
    cport_isb isb = {1, 1};
    cport_isb out;
    cport_completion c;
    size_t n;
    char buf[16];
    struct iovec iov = {buf, sizeof buf};
    int fd;

    CHECK(cport_port_inc_ref(NULL) == NULL);
    cport_port_dec_ref(NULL); /* does nothing */
    CHECK_ERR(cport_shutdown(NULL), CPORT_EINVAL);
    CHECK_ERR(cport_wakeup(NULL), CPORT_EINVAL);
    CHECK_ERR(cport_post(NULL, NULL, 1), CPORT_EINVAL);
    CHECK_ERR(cport_listen(NULL, "127.0.0.1:0", NULL, &out), CPORT_EINVAL);
    CHECK_ERR(cport_connect(NULL, "127.0.0.1:1", NULL, &out), CPORT_EINVAL);
    CHECK_ERR(cport_local_addr(NULL, isb, buf, sizeof buf), CPORT_EINVAL);
    CHECK_ERR(cport_read(NULL, isb, buf, 1, sizeof buf), CPORT_EINVAL);
    CHECK_ERR(cport_write(NULL, isb, buf, sizeof buf), CPORT_EINVAL);
    CHECK_ERR(cport_readv(NULL, isb, &iov, 1, 1), CPORT_EINVAL);
    CHECK_ERR(cport_writev(NULL, isb, &iov, 1), CPORT_EINVAL);
    CHECK_ERR(cport_accept(NULL, isb, 1), CPORT_EINVAL);
    CHECK_ERR(cport_close(NULL, isb), CPORT_EINVAL);
    CHECK_ERR(cport_cancel(NULL, isb, &n), CPORT_EINVAL);
    CHECK_ERR(cport_set_timeout(NULL, isb, 10), CPORT_EINVAL);
    CHECK_ERR(cport_deassign(NULL, isb, &fd), CPORT_EINVAL);
    CHECK_ERR(cport_next_completion(NULL, 0, &c), CPORT_EINVAL);
    n = 9;
    CHECK_ERR(cport_next_completions(NULL, 0, &c, 1, &n), CPORT_EINVAL);
    CHECK_EQ(n, 0); /* *count is 0 whenever the call does not return CPORT_OK */

    /* assign_fd takes the fd even when it fails: it is closed. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK_ERR(cport_assign_fd(NULL, sv[0], NULL, &out), CPORT_EINVAL);
    CHECK(!fd_is_open(sv[0]), "a refused fd must be closed by cport_assign_fd");
    close(sv[1]);

    /* Options: reserved flags must be 0. */
    cport_options o = {0, 1};
    CHECK(cport_create_port(&o) == NULL);
    CHECK(cport_last_error()[0] != '\0');
}

static void null_out_pointers(cport_port *port) {
    char buf[16];
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK_ERR(cport_assign_fd(port, sv[0], NULL, NULL), CPORT_EINVAL);
    CHECK(!fd_is_open(sv[0]), "a refused fd must be closed by cport_assign_fd");
    close(sv[1]);

    /* A listen or connect refused for its NULL out pointer starts nothing: no stream, no
     * completion. */
    char path[64];
    snprintf(path, sizeof path, "/tmp/cport-test-bad-args-%d.sock", (int)getpid());
    unlink(path);
    char unix_addr[80];
    snprintf(unix_addr, sizeof unix_addr, "unix:%s", path);
    CHECK_ERR(cport_listen(port, unix_addr, NULL, NULL), CPORT_EINVAL);
    struct stat st;
    CHECK(stat(path, &st) != 0, "a refused listen must not bind %s", path);
    CHECK_ERR(cport_listen(port, NULL, NULL, NULL), CPORT_EINVAL);

    cport_isb listener;
    CHECK_OK(cport_listen(port, "127.0.0.1:0", NULL, &listener));
    char addr[64];
    CHECK_OK(cport_local_addr(port, listener, addr, sizeof addr));
    CHECK_ERR(cport_connect(port, addr, NULL, NULL), CPORT_EINVAL);
    CHECK_ERR(cport_connect(port, NULL, NULL, NULL), CPORT_EINVAL);
    CHECK_NO_COMPLETION(port, 100); /* no connect completion of a stream nobody has */

    size_t n;
    cport_completion c;
    CHECK_ERR(cport_next_completion(port, 0, NULL), CPORT_EINVAL);
    CHECK_ERR(cport_next_completions(port, 0, NULL, 1, &n), CPORT_EINVAL);
    CHECK_ERR(cport_next_completions(port, 0, &c, 1, NULL), CPORT_EINVAL);
    n = 9;
    CHECK_ERR(cport_next_completions(port, 0, &c, 0, &n), CPORT_EINVAL);
    CHECK_EQ(n, 0);
    CHECK_ERR(cport_local_addr(port, listener, NULL, 64), CPORT_EINVAL);
    CHECK(strstr(cport_last_error(), "null buffer") != NULL, "the reason: %s", cport_last_error());

    /* cancel's count pointer may be NULL. */
    CHECK_OK(cport_cancel(port, listener, NULL));
    CHECK_OK(cport_close(port, listener));
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_CLOSE);
    (void)buf;
}

/* Every stream call with `isb` returns `class`. */
static void every_call_refuses(cport_port *port, cport_isb isb, int class) {
    char buf[16];
    struct iovec iov = {buf, sizeof buf};
    size_t n = 12345;
    int fd = -12345;
    CHECK_ERR(cport_local_addr(port, isb, buf, sizeof buf), class);
    CHECK_ERR(cport_read(port, isb, buf, 1, sizeof buf), class);
    CHECK_ERR(cport_write(port, isb, buf, sizeof buf), class);
    CHECK_ERR(cport_readv(port, isb, &iov, 1, 1), class);
    CHECK_ERR(cport_writev(port, isb, &iov, 1), class);
    CHECK_ERR(cport_accept(port, isb, 1), class);
    CHECK_ERR(cport_close(port, isb), class);
    CHECK_ERR(cport_cancel(port, isb, &n), class);
    CHECK_EQ(n, 12345); /* not written on failure */
    CHECK_ERR(cport_set_timeout(port, isb, 10), class);
    CHECK_ERR(cport_deassign(port, isb, &fd), class);
    CHECK_EQ(fd, -12345);
    CHECK_ERR(cport_deassign(port, isb, NULL), class);
}

static void bad_isbs(cport_port *port, cport_port *other) {
    cport_completion c;
    int sv[2];
    char rbuf[8];

    /* A live stream of `other`: EINVAL on `port`, and it is not disturbed. */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    cport_isb foreign;
    CHECK_OK(cport_assign_fd(other, sv[0], NULL, &foreign));
    CHECK_OK(cport_read(other, foreign, rbuf, 1, sizeof rbuf));
    every_call_refuses(port, foreign, CPORT_EINVAL);
    CHECK(write(sv[1], "x", 1) == 1);
    NEXT(other, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_READ);
    CHECK_EQ(c.status, CPORT_STATUS_OK);
    CHECK_OK(cport_deassign(other, foreign, NULL));
    close(sv[1]);

    /* All zero names no stream; garbage with another port's number is another port's. */
    cport_isb zero = {0, 0};
    every_call_refuses(port, zero, CPORT_EINVAL);
    cport_isb garbage = {0xdeadbeefcafef00dULL, 0x0123456789abcdefULL};
    every_call_refuses(port, garbage, CPORT_EINVAL);

    /* Garbage stream numbers with this port's number: not assigned. */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    cport_isb live;
    CHECK_OK(cport_assign_fd(port, sv[0], NULL, &live));
    uint64_t junk[] = {0, 1, live.stream + 1, live.stream ^ (1ULL << 40), live.stream ^ (1ULL << 63),
                       UINT64_MAX, 0x0123456789abcdefULL};
    for (size_t i = 0; i < sizeof junk / sizeof *junk; i++) {
        if (junk[i] == live.stream)
            continue;
        cport_isb g = {live.port, junk[i]};
        every_call_refuses(port, g, CPORT_ENOTASSIGNED);
    }

    /* Stale after close: the close completion taken, then the slot reused by a new stream.
     * The old handle names nothing and never reaches the new stream. */
    CHECK_OK(cport_close(port, live));
    every_call_refuses(port, live, CPORT_ENOTASSIGNED);
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_CLOSE);
    every_call_refuses(port, live, CPORT_ENOTASSIGNED);
    close(sv[1]);

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    cport_isb reused;
    CHECK_OK(cport_assign_fd(port, sv[0], NULL, &reused));
    CHECK_OK(cport_read(port, reused, rbuf, 1, sizeof rbuf));
    every_call_refuses(port, live, CPORT_ENOTASSIGNED);
    CHECK_NO_COMPLETION(port, 0); /* the stale handle cancelled nothing */
    CHECK(write(sv[1], "y", 1) == 1);
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_READ);
    CHECK_EQ(c.status, CPORT_STATUS_OK);
    CHECK_EQ(c.isb.stream, reused.stream);

    /* Stale after deassign. */
    CHECK_OK(cport_deassign(port, reused, NULL));
    every_call_refuses(port, reused, CPORT_ENOTASSIGNED);
    close(sv[1]);
    CHECK_NO_COMPLETION(port, 0);
}

static void bad_fds(cport_port *port) {
    cport_isb isb;
    CHECK_ERR(cport_assign_fd(port, -1, NULL, &isb), CPORT_EINVAL);
    CHECK_ERR(cport_assign_fd(port, -1000, NULL, &isb), CPORT_EINVAL);

    /* A closed fd: epoll cannot watch it. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    close(sv[0]);
    close(sv[1]);
    int r = cport_assign_fd(port, sv[0], NULL, &isb);
    CHECK(r == CPORT_EINVAL || r == CPORT_EOS, "a closed fd: %d (%s)", r, cport_strerror(r));
    CHECK(cport_last_error()[0] != '\0');
    if (r == CPORT_EOS)
        CHECK_EQ(errno, EBADF);

    /* A regular file: EINVAL, and the fd is closed. */
    char path[64];
    snprintf(path, sizeof path, "/tmp/cport-test-bad-args-%d.file", (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    unlink(path);
    CHECK_ERR(cport_assign_fd(port, fd, (void *)0x1234, &isb), CPORT_EINVAL);
    CHECK(!fd_is_open(fd), "a refused regular file must be closed");
    /* The message names the stream by its user pointer, not as if it were a number of fd. */
    CHECK(strstr(cport_last_error(), "user 0x1234") != NULL && strstr(cport_last_error(), "4660") == NULL,
          "the message: %s", cport_last_error());

    /* An fd already assigned: EINVAL, and the stream that has it keeps it. */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK_OK(cport_assign_fd(port, sv[0], NULL, &isb));
    cport_isb twice;
    CHECK_ERR(cport_assign_fd(port, sv[0], NULL, &twice), CPORT_EINVAL);
    CHECK_ERR(cport_assign_fd(port, sv[0], NULL, NULL), CPORT_EINVAL);
    /* The fd is the first stream's: the refusals left it open, and it still works. */
    CHECK(fd_is_open(sv[0]));
    char b[4];
    cport_completion c;
    CHECK_OK(cport_write(port, isb, "ok", 2));
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_WRITE);
    CHECK_EQ(c.status, CPORT_STATUS_OK);
    CHECK(read(sv[1], b, 2) == 2 && memcmp(b, "ok", 2) == 0);
    CHECK_OK(cport_deassign(port, isb, NULL));
    close(sv[1]);
}

static void bad_buffers(cport_port *port) {
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    cport_isb isb;
    CHECK_OK(cport_assign_fd(port, sv[0], NULL, &isb));
    char buf[64];
    struct iovec iov[2] = {{buf, 32}, {buf + 32, 32}};
    struct iovec null_iov[2] = {{buf, 32}, {NULL, 32}};
    static struct iovec many[100000];
    for (int i = 0; i < 100000; i++)
        many[i] = (struct iovec){buf, 1};

    CHECK_ERR(cport_read(port, isb, NULL, 1, 16), CPORT_EINVAL);
    CHECK_ERR(cport_read(port, isb, buf, 0, 0), CPORT_EINVAL);
    CHECK_ERR(cport_read(port, isb, buf, 5, 4), CPORT_EINVAL);
    CHECK_ERR(cport_read(port, isb, buf, SIZE_MAX, 16), CPORT_EINVAL);
    CHECK_ERR(cport_read(port, isb, buf, 1, SIZE_MAX), CPORT_EINVAL);
    CHECK_ERR(cport_write(port, isb, NULL, 16), CPORT_EINVAL);
    CHECK_ERR(cport_write(port, isb, buf, 0), CPORT_EINVAL);
    CHECK_ERR(cport_readv(port, isb, NULL, 1, 1), CPORT_EINVAL);
    CHECK_ERR(cport_readv(port, isb, iov, 0, 1), CPORT_EINVAL);
    CHECK_ERR(cport_readv(port, isb, iov, -1, 1), CPORT_EINVAL);
    CHECK_ERR(cport_readv(port, isb, many, 100000, 1), CPORT_EINVAL);
    CHECK_ERR(cport_readv(port, isb, many, 1025, 1), CPORT_EINVAL);
    CHECK_ERR(cport_readv(port, isb, null_iov, 2, 1), CPORT_EINVAL);
    CHECK_ERR(cport_readv(port, isb, iov, 2, 65), CPORT_EINVAL);
    CHECK_ERR(cport_writev(port, isb, NULL, 1), CPORT_EINVAL);
    CHECK_ERR(cport_writev(port, isb, iov, 0), CPORT_EINVAL);
    CHECK_ERR(cport_writev(port, isb, many, 100000), CPORT_EINVAL);
    CHECK_ERR(cport_writev(port, isb, null_iov, 2), CPORT_EINVAL);
    CHECK_ERR(cport_accept(port, isb, 1), CPORT_EINVAL); /* not a listener */
    CHECK_NO_COMPLETION(port, 0);                         /* nothing was started */

    /* One I/O per side: a second read is EBUSY, and its buffer is left alone. */
    char second[8];
    memset(second, 0x5a, sizeof second);
    CHECK_OK(cport_read(port, isb, buf, 1, sizeof buf));
    CHECK_ERR(cport_read(port, isb, second, 1, sizeof second), CPORT_EBUSY);
    CHECK_ERR(cport_readv(port, isb, iov, 2, 1), CPORT_EBUSY);
    CHECK(write(sv[1], "abc", 3) == 3);
    cport_completion c;
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_READ);
    CHECK(c.buf == buf);
    CHECK_EQ(c.bytes, 3);
    for (size_t i = 0; i < sizeof second; i++)
        CHECK_EQ(second[i], 0x5a);

    /* cport_local_addr: not an IP socket; then a buffer too small for an IP address. */
    CHECK_ERR(cport_local_addr(port, isb, buf, sizeof buf), CPORT_EINVAL);
    CHECK_OK(cport_deassign(port, isb, NULL));
    close(sv[1]);

    cport_isb listener;
    CHECK_OK(cport_listen(port, "127.0.0.1:0", NULL, &listener));
    char addr[64];
    CHECK_OK(cport_local_addr(port, listener, addr, sizeof addr));
    size_t need = strlen(addr) + 1;
    char small[64];
    memset(small, 0x77, sizeof small);
    CHECK_ERR(cport_local_addr(port, listener, small, need - 1), CPORT_EINVAL);
    CHECK(strstr(cport_last_error(), "needs") != NULL, "the message says how much is needed");
    for (size_t i = 0; i < sizeof small; i++)
        CHECK_EQ(small[i], 0x77); /* nothing written */
    CHECK_ERR(cport_local_addr(port, listener, small, 0), CPORT_EINVAL);
    CHECK_OK(cport_local_addr(port, listener, small, need));
    CHECK(strcmp(small, addr) == 0);
    CHECK_ERR(cport_accept(port, listener, 0), CPORT_EINVAL);
    CHECK_ERR(cport_read(port, listener, buf, 1, sizeof buf), CPORT_EINVAL);
    CHECK_OK(cport_deassign(port, listener, NULL));
    CHECK_NO_COMPLETION(port, 0);
}

static void bad_addresses(cport_port *port) {
    cport_isb isb;
    const char *bad[] = {"nonsense", "unix:", "", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999",
                         ":80", "[::1", "300.1.1.1:80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        clear_last_error();
        CHECK_ERR(cport_listen(port, bad[i], NULL, &isb), CPORT_EINVAL);
        CHECK_ERR(cport_connect(port, bad[i], NULL, &isb), CPORT_EINVAL);
    }
    /* Not UTF-8. */
    CHECK_ERR(cport_listen(port, "\xff\xfe:80", NULL, &isb), CPORT_EINVAL);
    CHECK_ERR(cport_connect(port, "\xff\xfe:80", NULL, &isb), CPORT_EINVAL);
    /* A Unix path that does not exist: the connect starts and its completion says why. */
    CHECK_OK(cport_connect(port, "unix:/nonexistent/cport/socket", (void *)0x5, &isb));
    cport_completion c;
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_CONNECT);
    CHECK_EQ(c.status, CPORT_STATUS_FAILED);
    CHECK_EQ(c.error, CPORT_EOS);
    CHECK_EQ(c.os_error, ENOENT);
    CHECK(c.user == (void *)0x5);
    CHECK_OK(cport_deassign(port, isb, NULL));
    CHECK_NO_COMPLETION(port, 0);
}

static void after_shutdown(cport_port *port) {
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    cport_isb isb;
    CHECK_OK(cport_assign_fd(port, sv[0], NULL, &isb));
    char buf[8];
    CHECK_OK(cport_read(port, isb, buf, 1, sizeof buf));
    CHECK_OK(cport_shutdown(port));
    CHECK_OK(cport_shutdown(port)); /* again: nothing */

    cport_completion c;
    NEXT(port, 5000, &c);
    CHECK_EQ(c.op, CPORT_OP_READ);
    CHECK_EQ(c.status, CPORT_STATUS_CANCELLED);
    CHECK(c.buf == buf);
    CHECK_ERR(cport_next_completion(port, 0, &c), CPORT_ECLOSED);
    CHECK_ERR(cport_next_completion(port, -1, &c), CPORT_ECLOSED);

    CHECK_ERR(cport_post(port, NULL, 1), CPORT_ECLOSED);
    CHECK_ERR(cport_read(port, isb, buf, 1, sizeof buf), CPORT_ECLOSED);
    CHECK_ERR(cport_write(port, isb, buf, sizeof buf), CPORT_ECLOSED);
    CHECK_ERR(cport_close(port, isb), CPORT_ECLOSED);
    CHECK_ERR(cport_set_timeout(port, isb, 10), CPORT_ECLOSED);
    CHECK_ERR(cport_listen(port, "127.0.0.1:0", NULL, &isb), CPORT_ECLOSED);
    CHECK_ERR(cport_connect(port, "127.0.0.1:1", NULL, &isb), CPORT_ECLOSED);
    int sv2[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv2) == 0);
    cport_isb late;
    CHECK_ERR(cport_assign_fd(port, sv2[0], NULL, &late), CPORT_ECLOSED);
    CHECK(!fd_is_open(sv2[0]), "a refused fd must be closed");
    close(sv2[1]);
    /* ...except the fd of a stream still assigned: it stays that stream's. */
    CHECK_ERR(cport_assign_fd(port, sv[0], NULL, &late), CPORT_ECLOSED);
    CHECK(fd_is_open(sv[0]));
    size_t n = 99;
    CHECK_OK(cport_cancel(port, isb, &n));
    CHECK_EQ(n, 0);
    CHECK_OK(cport_wakeup(port));
    /* deassign still releases the stream, with the fd back. */
    int fd = -1;
    CHECK_OK(cport_deassign(port, isb, &fd));
    CHECK(fd >= 0 && fd_is_open(fd));
    close(fd);
    close(sv[1]);
    CHECK_ERR(cport_next_completion(port, 0, &c), CPORT_ECLOSED);
}

int main(void) {
    test_start("bad_args", 30);
    strerror_of_every_class();
    null_port();

    cport_port *port = cport_create_port(NULL);
    cport_port *other = cport_create_port(NULL);
    CHECK(port && other);
    CHECK(cport_port_inc_ref(port) == port);
    cport_port_dec_ref(port);

    null_out_pointers(port);
    bad_isbs(port, other);
    bad_fds(port);
    bad_buffers(port);
    bad_addresses(port);
    after_shutdown(port);

    /* The other port's handles after that port is gone still name nothing here. */
    cport_port_dec_ref(other);
    cport_port_dec_ref(port);
    test_pass();
    return 0;
}
