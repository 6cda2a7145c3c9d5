/*
 * completion_port.h, the original module's API on a cport port: receives, sends and hang-up
 * watches with their callbacks and results, refused requests, remove and the last dec_ref
 * with requests pending (each ends in exactly one COMPLETION_PORT_CLOSING callback), and a
 * last dec_ref from inside a callback. Callbacks must run on the port's thread, one at a
 * time. Run under valgrind by tests/c/run.sh.
 */
#include "check.h"

#include <completion_port.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <errno.h>

/* What the callbacks saw, for the main thread to wait on. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int in_callback;
static pthread_t main_thread;

struct request {
    int calls;
    int action, result, amount;
};

static void on_event(void *context, COMPLETION_PORT_EPOLL_ACTION action, COMPLETION_PORT_RESULT result,
                     int32_t amount) {
    CHECK(!pthread_equal(pthread_self(), main_thread), "callbacks run on the port's thread");
    pthread_mutex_lock(&lock);
    CHECK_EQ(in_callback, 0); /* one at a time */
    in_callback = 1;
    struct request *r = context;
    r->calls++;
    r->action = action;
    r->result = result;
    r->amount = amount;
    in_callback = 0;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

/* Waits until `r` has had its callback, then checks it had exactly one, as expected. */
static void expect(struct request *r, int action, int result, int amount) {
    pthread_mutex_lock(&lock);
    while (r->calls == 0)
        pthread_cond_wait(&changed, &lock);
    CHECK_EQ(r->calls, 1);
    CHECK_EQ(r->action, action);
    CHECK_EQ(r->result, result);
    if (amount >= 0)
        CHECK_EQ(r->amount, amount);
    pthread_mutex_unlock(&lock);
}

static int calls_of(struct request *r) {
    pthread_mutex_lock(&lock);
    int n = r->calls;
    pthread_mutex_unlock(&lock);
    return n;
}

static COMPLETION_PORT_INGRESS_DATA request(int op, int socket, struct request *r, void *buf, uint32_t len) {
    COMPLETION_PORT_INGRESS_DATA d = {op, socket, on_event, r, {buf, len}};
    return d;
}

static void receive_send_and_hangup(COMPLETION_PORT_HANDLE cp) {
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    char rbuf[64];
    struct request rx = {0}, watch = {0};
    COMPLETION_PORT_INGRESS_DATA d = request(EPOLLIN, sv[0], &rx, rbuf, sizeof rbuf);
    CHECK_EQ(completion_port_add(cp, &d), 0);
    d = request(EPOLLRDHUP, sv[0], &watch, NULL, 0);
    CHECK_EQ(completion_port_add(cp, &d), 0);
    CHECK(write(sv[1], "hello", 5) == 5);
    expect(&rx, COMPLETION_PORT_EPOLL_EPOLLIN, COMPLETION_PORT_RESULT_OK, 5);
    CHECK(memcmp(rbuf, "hello", 5) == 0);

    /* A send larger than the socket buffers, read by the peer meanwhile. */
    size_t big = 1 << 20;
    char *wbuf = malloc(big);
    for (size_t i = 0; i < big; i++)
        wbuf[i] = (char)(i * 31);
    struct request tx = {0};
    d = request(EPOLLOUT, sv[0], &tx, wbuf, (uint32_t)big);
    CHECK_EQ(completion_port_add(cp, &d), 0);
    char *got = malloc(big);
    size_t have = 0;
    while (have < big) {
        ssize_t n = read(sv[1], got + have, big - have);
        CHECK(n > 0);
        have += (size_t)n;
    }
    expect(&tx, COMPLETION_PORT_EPOLL_EPOLLOUT, COMPLETION_PORT_RESULT_OK, (int)big);
    CHECK(memcmp(got, wbuf, big) == 0);
    free(got);
    free(wbuf);

    /* The peer closes: the receive ends with 0 bytes (OK), and the watch says ABANDONED. */
    CHECK_EQ(calls_of(&watch), 0);
    struct request eof = {0};
    d = request(EPOLLIN, sv[0], &eof, rbuf, sizeof rbuf);
    CHECK_EQ(completion_port_add(cp, &d), 0);
    close(sv[1]);
    expect(&eof, COMPLETION_PORT_EPOLL_EPOLLIN, COMPLETION_PORT_RESULT_OK, 0);
    expect(&watch, COMPLETION_PORT_EPOLL_EPOLLRDHUP, COMPLETION_PORT_RESULT_ABANDONED, 0);
    completion_port_remove(cp, sv[0]);
    CHECK(fcntl(sv[0], F_GETFD) != -1, "the caller's socket stays open");
    close(sv[0]);
}

/* A hang-up watch alone (no receive pending) fires on the peer's hang-up: a shutdown of its
 * writing side, or a close; a watch added after the hang-up fires at once. */
static void hangup_watch_alone(COMPLETION_PORT_HANDLE cp) {
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    struct request w = {0};
    COMPLETION_PORT_INGRESS_DATA d = request(EPOLLRDHUP, sv[0], &w, NULL, 0);
    CHECK_EQ(completion_port_add(cp, &d), 0);
    CHECK(shutdown(sv[1], SHUT_WR) == 0);
    expect(&w, COMPLETION_PORT_EPOLL_EPOLLRDHUP, COMPLETION_PORT_RESULT_ABANDONED, 0);

    struct request again = {0};
    d = request(EPOLLRDHUP, sv[0], &again, NULL, 0);
    CHECK_EQ(completion_port_add(cp, &d), 0);
    expect(&again, COMPLETION_PORT_EPOLL_EPOLLRDHUP, COMPLETION_PORT_RESULT_ABANDONED, 0);
    /* The watch ended once: a receive now meets the end of stream and says so, alone. */
    char buf[8];
    struct request rx = {0};
    d = request(EPOLLIN, sv[0], &rx, buf, sizeof buf);
    CHECK_EQ(completion_port_add(cp, &d), 0);
    expect(&rx, COMPLETION_PORT_EPOLL_EPOLLIN, COMPLETION_PORT_RESULT_OK, 0);
    CHECK_EQ(calls_of(&w), 1);
    CHECK_EQ(calls_of(&again), 1);
    completion_port_remove(cp, sv[0]);
    close(sv[0]);
    close(sv[1]);

    /* A close by the peer, on TCP. */
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    CHECK(l >= 0 && bind(l, (struct sockaddr *)&sin, sizeof sin) == 0 && listen(l, 1) == 0);
    CHECK(getsockname(l, (struct sockaddr *)&sin, &len) == 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c >= 0 && connect(c, (struct sockaddr *)&sin, sizeof sin) == 0);
    int a = accept(l, NULL, NULL);
    CHECK(a >= 0);
    struct request tw = {0};
    d = request(EPOLLRDHUP, a, &tw, NULL, 0);
    CHECK_EQ(completion_port_add(cp, &d), 0);
    CHECK_EQ(calls_of(&tw), 0);
    close(c);
    expect(&tw, COMPLETION_PORT_EPOLL_EPOLLRDHUP, COMPLETION_PORT_RESULT_ABANDONED, 0);
    completion_port_remove(cp, a);
    close(a);
    close(l);
}

/* The caller closes a socket without completion_port_remove and a new socket gets its number:
 * the port notices (another socket behind the number), ends the old socket's request
 * (CLOSING) and serves the new socket: a send reaches the new peer, never the old one's, and
 * a receive gets the new peer's bytes. */
static void reused_socket_number(COMPLETION_PORT_HANDLE cp) {
    int old[2], neu[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, old) == 0);
    char obuf[8];
    struct request orx = {0}, owatch = {0};
    COMPLETION_PORT_INGRESS_DATA d = request(EPOLLIN, old[0], &orx, obuf, sizeof obuf);
    CHECK_EQ(completion_port_add(cp, &d), 0);
    d = request(EPOLLRDHUP, old[0], &owatch, NULL, 0);
    CHECK_EQ(completion_port_add(cp, &d), 0);
    int n = old[0];
    close(old[0]); /* the caller's mistake: no remove first */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, neu) == 0);
    if (neu[0] != n) { /* make sure the number is reused */
        CHECK(dup2(neu[0], n) == n);
        close(neu[0]);
        neu[0] = n;
    }
    char msg[] = "for the new peer";
    struct request tx = {0};
    d = request(EPOLLOUT, n, &tx, msg, sizeof msg);
    CHECK_EQ(completion_port_add(cp, &d), 0);
    expect(&tx, COMPLETION_PORT_EPOLL_EPOLLOUT, COMPLETION_PORT_RESULT_OK, (int)sizeof msg);
    expect(&orx, COMPLETION_PORT_CLOSING, COMPLETION_PORT_RESULT_ABANDONED, 0);
    expect(&owatch, COMPLETION_PORT_CLOSING, COMPLETION_PORT_RESULT_ABANDONED, 0);
    char got[sizeof msg];
    CHECK(recv(neu[1], got, sizeof got, MSG_WAITALL) == (ssize_t)sizeof msg);
    CHECK(memcmp(got, msg, sizeof msg) == 0);
    /* The old socket is closed now (the caller's fd and the port's duplicate): its peer sees
     * the end of stream, and no byte. */
    ssize_t r = recv(old[1], got, sizeof got, MSG_DONTWAIT);
    CHECK(r == 0 || (r == -1 && errno == EAGAIN), "the old peer got %zd bytes", r);

    char nbuf[8];
    struct request nrx = {0};
    d = request(EPOLLIN, n, &nrx, nbuf, sizeof nbuf);
    CHECK_EQ(completion_port_add(cp, &d), 0);
    CHECK(write(neu[1], "new", 3) == 3);
    expect(&nrx, COMPLETION_PORT_EPOLL_EPOLLIN, COMPLETION_PORT_RESULT_OK, 3);
    CHECK(memcmp(nbuf, "new", 3) == 0);
    completion_port_remove(cp, n);
    close(neu[0]);
    close(neu[1]);
    close(old[1]);
}

static void refused_requests(COMPLETION_PORT_HANDLE cp) {
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    char buf[8];
    struct request r = {0};
    COMPLETION_PORT_INGRESS_DATA d = request(EPOLLIN, sv[0], &r, buf, sizeof buf);
    CHECK(completion_port_add(NULL, &d) != 0);
    CHECK(completion_port_add(cp, NULL) != 0);
    int bad_ops[] = {0, EPOLLIN | EPOLLOUT, EPOLLPRI, EPOLLIN | EPOLLET};
    for (size_t i = 0; i < sizeof bad_ops / sizeof *bad_ops; i++) {
        d = request(bad_ops[i], sv[0], &r, buf, sizeof buf);
        CHECK(completion_port_add(cp, &d) != 0, "epoll_op %#x", bad_ops[i]);
    }
    d = request(EPOLLIN, sv[0], &r, buf, sizeof buf);
    d.event_callback = NULL;
    CHECK(completion_port_add(cp, &d) != 0);
    d = request(EPOLLIN, sv[0], &r, NULL, sizeof buf);
    CHECK(completion_port_add(cp, &d) != 0);
    d = request(EPOLLOUT, sv[0], &r, buf, 0);
    CHECK(completion_port_add(cp, &d) != 0);
    /* The first add of a socket refused, after the socket was looked at (a listener cannot
     * receive): the port keeps nothing of it. Once the caller closes it, nobody listens. */
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "/tmp/cport-test-compat-%d.sock", (int)getpid());
    unlink(sun.sun_path);
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&sun, sizeof sun) == 0 && listen(lfd, 4) == 0);
    d = request(EPOLLIN, lfd, &r, buf, sizeof buf);
    CHECK(completion_port_add(cp, &d) != 0);
    close(lfd);
    int probe = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(connect(probe, (struct sockaddr *)&sun, sizeof sun) != 0 && errno == ECONNREFUSED,
          "a refused add kept the listener open");
    close(probe);
    unlink(sun.sun_path);
    d = request(EPOLLIN, -1, &r, buf, sizeof buf);
    CHECK(completion_port_add(cp, &d) != 0);
    d = request(EPOLLIN, 999999, &r, buf, sizeof buf); /* not an open fd */
    CHECK(completion_port_add(cp, &d) != 0);
    CHECK(cport_last_error()[0] != '\0');

    /* One receive at a time per socket; the refused second one gets no callback. */
    struct request first = {0}, second = {0};
    char buf2[8];
    d = request(EPOLLIN, sv[0], &first, buf, sizeof buf);
    CHECK_EQ(completion_port_add(cp, &d), 0);
    d = request(EPOLLIN, sv[0], &second, buf2, sizeof buf2);
    CHECK(completion_port_add(cp, &d) != 0);

    struct request w = {0};
    d = request(EPOLLRDHUP, sv[0], &w, NULL, 0);
    CHECK_EQ(completion_port_add(cp, &d), 0);
    CHECK(completion_port_add(cp, &d) != 0); /* one watch at a time too */

    /* Remove with the receive and the watch pending: each ends CLOSING, once. */
    completion_port_remove(cp, sv[0]);
    expect(&first, COMPLETION_PORT_CLOSING, COMPLETION_PORT_RESULT_ABANDONED, 0);
    expect(&w, COMPLETION_PORT_CLOSING, COMPLETION_PORT_RESULT_ABANDONED, 0);
    completion_port_remove(cp, sv[0]); /* again: unknown now, nothing happens */
    completion_port_remove(NULL, sv[0]);
    CHECK_EQ(calls_of(&second), 0);
    CHECK_EQ(calls_of(&r), 0);
    CHECK(write(sv[0], "x", 1) == 1, "the caller's socket still works");
    close(sv[0]);
    close(sv[1]);
}

static void last_dec_ref_with_requests_pending(void) {
    COMPLETION_PORT_HANDLE cp = completion_port_create();
    CHECK(cp != NULL);
    completion_port_inc_ref(cp);
    completion_port_dec_ref(cp); /* not the last */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    char *buf = malloc(32);
    struct request rx = {0};
    COMPLETION_PORT_INGRESS_DATA d = request(EPOLLIN | EPOLLRDHUP, sv[0], &rx, buf, 32);
    CHECK_EQ(completion_port_add(cp, &d), 0);
    completion_port_dec_ref(cp);
    /* The thread was joined: the callbacks already ran (the receive and its watch share one
     * context here, so two calls). */
    CHECK_EQ(calls_of(&rx), 2);
    CHECK_EQ(rx.action, COMPLETION_PORT_CLOSING);
    free(buf); /* the port is gone; valgrind would see a later touch */
    close(sv[0]);
    close(sv[1]);
}

/* The last reference dropped by a callback on the port's own thread, with another request
 * still pending: its CLOSING callback comes after, and the handle it passes is refused, not
 * freed under it (valgrind would see the use). */
struct self_drop {
    COMPLETION_PORT_HANDLE cp;
    int socket;
    int dropped, closing, add_refused;
};

static void drop_port(void *context, COMPLETION_PORT_EPOLL_ACTION action, COMPLETION_PORT_RESULT result,
                      int32_t amount) {
    (void)result;
    (void)amount;
    struct self_drop *s = context;
    CHECK_EQ(action, COMPLETION_PORT_EPOLL_EPOLLIN);
    completion_port_dec_ref(s->cp);
    pthread_mutex_lock(&lock);
    s->dropped = 1;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static void after_drop(void *context, COMPLETION_PORT_EPOLL_ACTION action, COMPLETION_PORT_RESULT result,
                       int32_t amount) {
    (void)result;
    (void)amount;
    struct self_drop *s = context;
    char b[4];
    COMPLETION_PORT_INGRESS_DATA d = {EPOLLIN, s->socket, after_drop, s, {b, sizeof b}};
    int refused = completion_port_add(s->cp, &d) != 0;
    completion_port_remove(s->cp, s->socket); /* does nothing now */
    pthread_mutex_lock(&lock);
    CHECK(s->dropped, "the send's callback comes after the receive's");
    s->closing = action == COMPLETION_PORT_CLOSING;
    s->add_refused = refused;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static void dec_ref_from_a_callback(void) {
    struct self_drop s = {completion_port_create(), -1, 0, 0, 0};
    CHECK(s.cp != NULL);
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    s.socket = sv[0];
    size_t big = 4 << 20; /* more than the socket holds: stays pending, the peer never reads */
    char *wbuf = calloc(1, big);
    char buf[8];
    COMPLETION_PORT_INGRESS_DATA d = {EPOLLOUT, sv[0], after_drop, &s, {wbuf, (uint32_t)big}};
    CHECK_EQ(completion_port_add(s.cp, &d), 0);
    d = (COMPLETION_PORT_INGRESS_DATA){EPOLLIN, sv[0], drop_port, &s, {buf, sizeof buf}};
    CHECK_EQ(completion_port_add(s.cp, &d), 0);
    CHECK(write(sv[1], "q", 1) == 1);
    pthread_mutex_lock(&lock);
    while (!s.closing && !s.add_refused)
        pthread_cond_wait(&changed, &lock);
    pthread_mutex_unlock(&lock);
    CHECK(s.closing, "the pending send ended CLOSING");
    CHECK(s.add_refused, "a request through a released handle is refused");
    free(wbuf); /* its callback ran: the buffer is ours again */
    close(sv[0]);
    close(sv[1]);
}

/* Open fds of this process. */
static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

int main(void) {
    test_start("compat", 30);
    main_thread = pthread_self();
    int fds = open_fds();
    completion_port_inc_ref(NULL);
    completion_port_dec_ref(NULL);
    COMPLETION_PORT_HANDLE cp = completion_port_create();
    CHECK(cp != NULL);
    receive_send_and_hangup(cp);
    hangup_watch_alone(cp);
    reused_socket_number(cp);
    refused_requests(cp);
    completion_port_dec_ref(cp);
    last_dec_ref_with_requests_pending();
    dec_ref_from_a_callback();
    /* Every duplicate, watch epoll, eventfd and timerfd is closed with its port. */
    CHECK_EQ(open_fds(), fds);
    test_pass();
    return 0;
}
