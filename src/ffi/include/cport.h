/*
 * cport.h - an I/O completion port for Linux, for C.
 *
 * Post an I/O on a stream; any of many threads takes its completion with
 * cport_next_completion, in the order operations finish. Built on one epoll instance that the
 * waiting threads share; every started I/O ends in exactly one completion (success, end of
 * stream, error, peer hang-up, cancel, close, timeout, deassign, shutdown).
 *
 * Build the library with examples/c/build.sh (target/c/libcport.so and libcport.a); link with
 * -lcport -lpthread -ldl -lm.
 *
 * Conventions
 * - Every function that can fail returns a cport_error: CPORT_OK (0) on success, else the class
 *   of the failure. The failing call's message is kept per thread: cport_last_error(). When the
 *   OS reported the failure, errno is set to its number too. CPORT_ETIMEDOUT and CPORT_EWOKEN
 *   from cport_next_completion(s) are outcomes of a wait, not failures: they leave
 *   cport_last_error() as it was (a polling loop costs no message).
 * - Pointers: a function never keeps a pointer it is given past its return, except the buffers
 *   of an I/O (see "Buffers") and the port itself. A NULL where a pointer is required is
 *   CPORT_EINVAL, never a crash.
 * - Out-parameters are written only when the call returns CPORT_OK, unless its description
 *   says otherwise, and always before it returns. Other threads may take the completions a
 *   call produced before that return: cport_cancel's and cport_deassign's out-pointers must
 *   not point into memory that a completion handler may free. cport_connect's handle and the
 *   inline calls' done->op are written before anything can complete, so they may.
 * - Messages (cport_last_error) name a stream by its user pointer ("stream of user 0x1234").
 * - Threads: every function may be called from any thread, at the same time as any other,
 *   on the same port. Any number of threads may wait in cport_next_completion at once; each
 *   completion goes to exactly one of them.
 *
 * Ports
 *   A cport_port * is a counted reference. cport_create_port gives the first one;
 *   cport_port_inc_ref adds one (and returns the same pointer), cport_port_dec_ref drops one.
 *   Give each thread that uses the port a reference of its own and drop it when the thread is
 *   done. The last cport_port_dec_ref shuts the port down (see cport_shutdown), cancels every
 *   pending I/O (its buffers are not touched again), stops the workers, closes every assigned
 *   fd and frees the port: after it returns, nothing of the port runs. A pointer that is not a
 *   live port is undefined behaviour, except NULL (CPORT_EINVAL).
 *
 * Streams
 *   A cport_isb is a small value naming one stream of one port. It stays a valid value after
 *   its stream is released (closed, deassigned): using it then gives CPORT_ENOTASSIGNED; a
 *   handle of another port, or garbage, gives CPORT_EINVAL or CPORT_ENOTASSIGNED, never a
 *   crash and never another stream's I/O. Each stream has a read side and a write side; each
 *   side holds one I/O at a time (CPORT_EBUSY otherwise) until its completion has been taken.
 *
 * Buffers
 *   The caller's memory, lent to the port: from the call that starts an I/O until that I/O's
 *   completion is returned by cport_next_completion (IOCP's contract). Meanwhile the caller
 *   must neither free it nor touch it; any thread of the port may read or write it. After the
 *   completion is returned (or when the start call fails, or after the last cport_port_dec_ref
 *   returned), cport never touches it again. The completion hands the buffer pointer back.
 */
#ifndef CPORT_H
#define CPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- error classes (cport_error): stable values ---- */
#define CPORT_OK 0
#define CPORT_EBUSY 1          /* the side already has an I/O or an untaken completion */
#define CPORT_EINVAL 2         /* bad argument, NULL pointer, handle of another port */
#define CPORT_ENOTASSIGNED 3   /* the stream is not assigned (released, or never was) */
#define CPORT_ECLOSED 4        /* the port was shut down */
#define CPORT_ETIMEDOUT 5      /* a deadline passed; from cport_next_completion: the wait did */
#define CPORT_ECANCELLED 6     /* the I/O was cancelled */
#define CPORT_EABANDONED 7     /* the peer reset or hung up the connection */
#define CPORT_ELIMIT 8         /* a limit was reached */
#define CPORT_EOS 9            /* the OS reported an error: errno has it */
#define CPORT_EWOKEN 10        /* from cport_next_completion: cport_wakeup woke the thread */
#define CPORT_EINTERNAL 11     /* a bug in cport; please report it */

/* ---- operations (cport_completion.op) ---- */
#define CPORT_OP_READ 1
#define CPORT_OP_WRITE 2
#define CPORT_OP_READV 3
#define CPORT_OP_WRITEV 4
#define CPORT_OP_ACCEPT 5
#define CPORT_OP_CONNECT 6
#define CPORT_OP_CLOSE 7
#define CPORT_OP_POST 8

/* ---- how an I/O ended (cport_completion.status) ---- */
#define CPORT_STATUS_OK 0          /* done: a read got at least its minimum, a write sent all */
#define CPORT_STATUS_EOF 1         /* a read met end of stream before its minimum */
#define CPORT_STATUS_CANCELLED 2   /* cancel, close, deassign or shutdown ended it */
#define CPORT_STATUS_TIMED_OUT 3   /* the stream's deadline passed */
#define CPORT_STATUS_ABANDONED 4   /* the peer reset or hung up */
#define CPORT_STATUS_FAILED 5      /* the OS reported an error (see os_error) */

/* A port. Opaque. */
typedef struct cport_port cport_port;

/* Options of cport_create_port; zero them, then set what you need. */
typedef struct cport_options {
    uint32_t threads;  /* dedicated worker threads; 0 (the fastest): the waiting threads do the I/O */
    uint32_t flags;    /* reserved: must be 0 */
} cport_options;

/* One stream of one port (see "Streams"). Copy it freely; all zero names no stream. */
typedef struct cport_isb {
    uint64_t port;    /* the port's serial number */
    uint64_t stream;  /* the stream's slot and generation */
} cport_isb;

/* One finished operation, filled by cport_next_completion. */
typedef struct cport_completion {
    void *user;        /* the user pointer given when the stream was made, or the post's */
    cport_isb isb;     /* the stream (all zero for a post) */
    int op;            /* CPORT_OP_* */
    int status;        /* CPORT_STATUS_* */
    size_t bytes;      /* bytes transferred (a read: the first `bytes` of buf are new) */
    void *buf;         /* a read's or write's buffer, handed back; NULL for other operations
                          and for vectored I/O (whose iovecs' memory is the caller's again) */
    size_t buf_len;    /* its length as given */
    int error;         /* the CPORT_E* class of a failed I/O; CPORT_OK if it succeeded */
    int os_error;      /* the errno of a failed I/O, or 0 */
    uint64_t value;    /* a post: its value; an accept: accepts of its series still to start */
    int accepted_fd;   /* an accept: the new connection, an fd the caller now owns (assign it
                          or close it); -1 otherwise */
} cport_completion;

/* ---- ports ---- */

/* Creates a port (options may be NULL: no workers). Returns NULL on failure
 * (cport_last_error says why). The caller owns one reference. */
cport_port *cport_create_port(const cport_options *options);

/* Adds a reference; returns `port`, or NULL if `port` is NULL or not a port. A pointer whose
 * references are all gone is undefined behaviour like any freed pointer (the port's memory is
 * marked when it is freed, so such a call most likely returns NULL, but do not rely on it). */
cport_port *cport_port_inc_ref(cport_port *port);

/* Drops a reference; the last one shuts the port down and frees it (see "Ports"). The caller
 * must not use this reference afterwards (a second dec_ref of it is undefined behaviour).
 * NULL does nothing. */
void cport_port_dec_ref(cport_port *port);

/* Shuts the port down: new I/O, streams and posts are refused with CPORT_ECLOSED, every pending
 * I/O completes as cancelled, and waiters take the completions left; after the last one,
 * cport_next_completion returns CPORT_ECLOSED. Calling it again does nothing. Streams stay
 * assigned until deassigned or the last reference goes. */
int cport_shutdown(cport_port *port);

/* Makes one thread waiting in cport_next_completion return CPORT_EWOKEN; with none waiting,
 * the next one that would wait returns at once. Completions already queued come first. */
int cport_wakeup(cport_port *port);

/* Queues a completion (op CPORT_OP_POST, status OK) carrying `user` and `value`.
 * CPORT_ECLOSED after shutdown (nothing queued). */
int cport_post(cport_port *port, void *user, uint64_t value);

/* ---- streams ---- */

/* Assigns an open fd to the port under `user` and writes its handle to *out (on success; no
 * I/O of the stream exists before this returns). The port owns the fd from then on (even
 * when this fails: then it is closed) until cport_deassign gives it back. Sockets are
 * recognised (TCP or Unix stream, listener, UDP) and used with send(MSG_NOSIGNAL); any other
 * fd epoll can watch (pipe, FIFO, tty, eventfd, ...) with read(2)/write(2). It is made
 * nonblocking. CPORT_EINVAL for an fd epoll cannot watch (a regular file), and for an fd
 * already assigned to this port. An fd one of the port's streams has is never closed by a
 * refusal (this one, CPORT_ECLOSED, a NULL out): it is still that stream's. An fd belongs to
 * one port: giving the same fd to a second port while the first has it is the caller's bug
 * (both would close it, the second close possibly another file's fd), which cport cannot
 * detect. */
int cport_assign_fd(cport_port *port, int fd, void *user, cport_isb *out);

/* Binds a listener to `addr` ("127.0.0.1:7000", "[::1]:0", port 0 = any; "unix:/path" for a
 * Unix socket, which must not exist) and assigns it under `user`; *out gets its handle on
 * success. Start accepting with cport_accept. A Unix listener's socket file stays after the
 * listener is closed (as with any Unix socket: unlink it when done), except when this call
 * fails after creating it: then it is removed. */
int cport_listen(cport_port *port, const char *addr, void *user, cport_isb *out);

/* Starts a nonblocking connect to `addr` (as for cport_listen) on a new stream assigned under
 * `user`; its completion (CPORT_OP_CONNECT; a refused connection: status FAILED, os_error
 * ECONNREFUSED) comes on that stream. *out gets the stream's handle before the connect
 * starts, so a thread that takes the CONNECT completion (even before this call returns)
 * finds it there, and this call never writes *out afterwards: *out may be a field of the
 * connection's own block, freed by the handler of the stream's CLOSE. On failure *out is
 * left as it was, or all zero. */
int cport_connect(cport_port *port, const char *addr, void *user, cport_isb *out);

/* Writes the local address of an IP stream ("127.0.0.1:41234") to buf, NUL-terminated (on
 * success only). CPORT_EINVAL for a NULL buf, a `len` too small (the message says how much
 * is needed), or a stream that is not an IP socket. */
int cport_local_addr(cport_port *port, cport_isb isb, char *buf, size_t len);

/* Starts a read into buf that completes once at least `min` (0 < min is not required: 0 reads
 * whatever is there, possibly nothing) and at most `max` bytes arrived, or at end of stream,
 * error, cancel... `max` bytes of buf are lent to the port (see "Buffers"). `max` must be at
 * least 1 (CPORT_EINVAL otherwise, as for min > max). */
int cport_read(cport_port *port, cport_isb isb, void *buf, size_t min, size_t max);

/* Starts a write of all `len` bytes of buf (lent to the port until the completion). `len`
 * must be at least 1 (CPORT_EINVAL otherwise: a write of nothing would complete at once
 * having done nothing). */
int cport_write(cport_port *port, cport_isb isb, const void *buf, size_t len);

/* As cport_read and cport_write, except that an I/O that finishes at once (data already
 * there, room in the send buffer) is not queued: its completion is written to *done and no
 * thread is woken for it (IOCP's "skip completion port on success"); done->op is 0 when the
 * I/O is pending (its completion then comes through cport_next_completion as usual). A thread
 * that handles a completion and starts the next I/O of the same stream (an echo's write)
 * saves a queue trip this way. done->op is set to 0 before the I/O starts (so a thread that
 * takes the pending I/O's completion, even before this call returns, may free the memory
 * `done` points into); the whole completion is written, on CPORT_OK, only when the I/O
 * finished at once (it was never queued). On failure done->op stays 0. Keep *done on the
 * calling thread's stack: once the I/O is pending, another thread may take its completion
 * at any time. */
int cport_read_inline(cport_port *port, cport_isb isb, void *buf, size_t min, size_t max, cport_completion *done);
int cport_write_inline(cport_port *port, cport_isb isb, const void *buf, size_t len, cport_completion *done);

/* Vectored read of at least `min` bytes into the `n` iovecs (1..1024; the array itself is
 * copied during the call; the memory it points to is lent until the completion). Entries of
 * length 0 are skipped; at least one must have a length. */
int cport_readv(cport_port *port, cport_isb isb, const struct iovec *iov, int n, size_t min);

/* Vectored write of every byte of the `n` iovecs (as cport_readv). */
int cport_writev(cport_port *port, cport_isb isb, const struct iovec *iov, int n);

/* Starts `n` accepts on a listener, one after another: each accepted connection is one
 * completion (accepted_fd), and the next accept starts as soon as that completion has been
 * taken, so the listener keeps one pending while connections are handled. SIZE_MAX accepts
 * until the listener is closed or cancelled. A cancel, close, deadline or shutdown ends the
 * series. */
int cport_accept(cport_port *port, cport_isb isb, size_t n);

/* Closes the stream: its pending I/O completes as cancelled, then a CPORT_OP_CLOSE completion,
 * the stream's last, comes once every other completion of the stream has been taken; the fd
 * is closed. CPORT_ECLOSED after shutdown (use cport_deassign then). */
int cport_close(cport_port *port, cport_isb isb);

/* Cancels the stream's pending I/O (each still completes once, as cancelled, unless it had
 * already finished); *cancelled (if not NULL) gets how many were cancelled, on CPORT_OK,
 * written after the cancelled completions were queued (see "Conventions": not into memory a
 * handler of those completions may free). */
int cport_cancel(cport_port *port, cport_isb isb, size_t *cancelled);

/* Sets the stream's deadline: I/O still pending `timeout_ms` from now completes as TIMED_OUT.
 * Negative: clears it. It fires once. */
int cport_set_timeout(cport_port *port, cport_isb isb, int64_t timeout_ms);

/* Releases the stream without a completion: its pending I/O completes as cancelled (its
 * buffers come back through cport_next_completion), and no completion of it is queued after
 * this returns. With fd NULL the fd is closed; else it is written to *fd, open, and the
 * caller owns it (on CPORT_OK, after the cancelled completions were queued: see
 * "Conventions"). */
int cport_deassign(cport_port *port, cport_isb isb, int *fd);

/* ---- completions ---- */

/* Waits at most `timeout_ms` (negative: no limit) for a completion and writes it to *out
 * (on CPORT_OK only). Returns CPORT_OK (a completion), CPORT_ETIMEDOUT, CPORT_EWOKEN
 * (cport_wakeup), or CPORT_ECLOSED once the port is shut down and every completion has been
 * taken. The calling thread may do the I/O of the streams that are ready while it waits. */
int cport_next_completion(cport_port *port, int timeout_ms, cport_completion *out);

/* Waits like cport_next_completion for the first completion, then takes up to `max` in all
 * without waiting again, writing them to out[0..*count]. Returns as cport_next_completion:
 * CPORT_EWOKEN for a wakeup and CPORT_ETIMEDOUT for a timeout, with a finite timeout as with
 * none. *count (if not NULL) is written by every call: 0 unless CPORT_OK. */
int cport_next_completions(cport_port *port, int timeout_ms, cport_completion *out, size_t max, size_t *count);

/* ---- errors ---- */

/* A static, NUL-terminated description of an error class. */
const char *cport_strerror(int code);

/* The message of the last failed call on this thread ("" if none), valid until this thread's
 * next failing call. */
const char *cport_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_H */
