/*
 * completion_port.h - the completion_port_* calls of the epoll completion-port module that
 * cport grew from, on top of a cport port, for programs written against that module.
 * Part of libcport (link as for cport.h). New code should use cport.h: it has many waiting
 * threads, cancel, deadlines, accept and connect, which this layer does not offer.
 *
 * Shape: a port has one thread of its own. It waits for the sockets' I/O, does it, and runs
 * every callback, one at a time. A request (completion_port_add) is one receive into the
 * caller's buffer (EPOLLIN: at least 1 byte, at most buffer_data.length), one send of the whole
 * buffer (EPOLLOUT), or a hang-up watch (EPOLLRDHUP, alone or OR-ed into an EPOLLIN or EPOLLOUT
 * request). Each socket holds at most one request of each kind at a time.
 *
 * Every request that completion_port_add accepted gets exactly one callback:
 *   EPOLLIN  + OK         the receive got `amount` bytes; 0 means the peer closed (end of stream)
 *   EPOLLOUT + OK         the whole buffer was sent
 *   EPOLLIN/EPOLLOUT + ABANDONED   the peer reset or hung up (`amount`: bytes moved before)
 *   EPOLLIN/EPOLLOUT + ERROR       the OS reported another error
 *   EPOLLRDHUP + ABANDONED         the peer hung up (shut its writing side down, closed or
 *                                  reset): seen by epoll, pending receive or not, or met
 *                                  by a receive or send of the socket
 *   COMPLETION_PORT_CLOSING + ABANDONED   the request ended unfinished: its socket was removed,
 *                                          or the port's last reference went
 * Buffers are lent from completion_port_add until their request's callback (which may free
 * them or add the next request). Callbacks run on the port's thread, never two at once;
 * they may call any function of this header, including the last completion_port_dec_ref.
 *
 * Sockets stay the caller's: the port works on a duplicate of each (made by the first add of
 * the socket), closed by completion_port_remove. Remove a socket before closing it; a socket
 * closed without it whose number is reused by a new socket is recognised at the next add of
 * that number (by its inode): the old socket's requests end with COMPLETION_PORT_CLOSING
 * and the add goes to the new socket, never to the old one's peer. The
 * duplicate shares the socket's open file, so the socket becomes nonblocking (O_NONBLOCK
 * belongs to the open file) and stays so after remove. Sockets are sent to with
 * send(MSG_NOSIGNAL); other fds (a pipe) with write(2), which raises SIGPIPE when the reader
 * is gone unless the program ignores that signal.
 */
#ifndef COMPLETION_PORT_H
#define COMPLETION_PORT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct COMPLETION_PORT_TAG *COMPLETION_PORT_HANDLE;
typedef int SOCKET_HANDLE;

/* The callback's action. */
#define COMPLETION_PORT_EPOLL_EPOLLRDHUP 0
#define COMPLETION_PORT_EPOLL_EPOLLIN 1
#define COMPLETION_PORT_EPOLL_EPOLLOUT 2
#define COMPLETION_PORT_CLOSING 3
typedef int COMPLETION_PORT_EPOLL_ACTION;

/* The callback's result. */
#define COMPLETION_PORT_RESULT_OK 0
#define COMPLETION_PORT_RESULT_ERROR 1
#define COMPLETION_PORT_RESULT_ABANDONED 2
typedef int COMPLETION_PORT_RESULT;

typedef void (*ON_COMPLETION_PORT_EVENT_COMPLETE)(void *context, COMPLETION_PORT_EPOLL_ACTION epoll_action,
                                                  COMPLETION_PORT_RESULT result, int32_t amount_transfered);

typedef struct EPOLL_BUFFER_DATA_TAG {
    void *buffer;     /* the caller's memory, lent until the request's callback */
    uint32_t length;  /* its length in bytes (not 0) */
} EPOLL_BUFFER_DATA;

typedef struct COMPLETION_PORT_INGRESS_DATA_TAG {
    int epoll_op;                                     /* EPOLLIN, EPOLLOUT or EPOLLRDHUP (see above) */
    SOCKET_HANDLE socket;                             /* the caller's socket */
    ON_COMPLETION_PORT_EVENT_COMPLETE event_callback; /* called once when the request ends */
    void *event_callback_ctx;                         /* its first argument */
    EPOLL_BUFFER_DATA buffer_data;                    /* a receive's or send's buffer */
} COMPLETION_PORT_INGRESS_DATA;

/* Creates a port and its thread, with one reference. NULL on failure. */
COMPLETION_PORT_HANDLE completion_port_create(void);

/* Adds a reference. NULL does nothing. */
void completion_port_inc_ref(COMPLETION_PORT_HANDLE completion_port);

/* Drops a reference. The last one ends every pending request (COMPLETION_PORT_CLOSING),
 * waits for the thread, closes the duplicates and frees the port. Called by a callback, it
 * returns at once; the callbacks still due run after it (CLOSING), the handle they may pass
 * refuses requests (add fails, remove does nothing), and the thread frees the port after the
 * last one. NULL does nothing. */
void completion_port_dec_ref(COMPLETION_PORT_HANDLE completion_port);

/* Starts the request. Returns 0, or non-zero with nothing started (and a socket not seen
 * before left alone): a NULL argument, no callback, an epoll_op other than the ones above, a
 * bad socket, a NULL buffer or a length of 0 or over INT32_MAX, a request of the same kind
 * pending on the socket, or the port going away. The struct itself is copied; the
 * buffer is lent. */
int completion_port_add(COMPLETION_PORT_HANDLE completion_port, const COMPLETION_PORT_INGRESS_DATA *ingress_data);

/* Stops using the socket: its pending requests get COMPLETION_PORT_CLOSING on the port's
 * thread (soon after, not before this returns) and the port's duplicate is closed; the
 * caller's socket stays open. An unknown socket or NULL does nothing. */
void completion_port_remove(COMPLETION_PORT_HANDLE completion_port, SOCKET_HANDLE socket);

#ifdef __cplusplus
}
#endif

#endif /* COMPLETION_PORT_H */
