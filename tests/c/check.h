/*
 * check.h - the checks shared by the C tests of cport in tests/c.
 *
 * Each test is a program: the first failed check prints where and why, with the message of
 * this thread's last failed cport call, and exits with status 1. A watchdog (test_start)
 * turns a hang into a failure with a message.
 */
#ifndef CPORT_TEST_CHECK_H
#define CPORT_TEST_CHECK_H

#include <cport.h>

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *test_name = "test";

static void check_failed(const char *file, int line, const char *expr, const char *fmt, ...) {
    fprintf(stderr, "%s: FAILED at %s:%d: %s", test_name, file, line, expr);
    if (fmt && *fmt) {
        va_list ap;
        va_start(ap, fmt);
        fputs(": ", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fprintf(stderr, " (cport_last_error: \"%s\")\n", cport_last_error());
    fflush(stderr);
    exit(1);
}

/* CHECK(condition) or CHECK(condition, "printf format", args...). */
#define CHECK(cond, ...) \
    do { \
        if (!(cond)) \
            check_failed(__FILE__, __LINE__, #cond, "" __VA_ARGS__); \
    } while (0)

/* Two integers equal (printed on failure). */
#define CHECK_EQ(a, b) \
    do { \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b); \
        if (check_a_ != check_b_) \
            check_failed(__FILE__, __LINE__, #a " == " #b, "%lld != %lld", check_a_, check_b_); \
    } while (0)

/* A cport call that must succeed. */
#define CHECK_OK(call) \
    do { \
        int check_r_ = (call); \
        if (check_r_ != CPORT_OK) \
            check_failed(__FILE__, __LINE__, #call, "returned %d (%s)", check_r_, cport_strerror(check_r_)); \
    } while (0)

/* A cport call that must fail with exactly the error class `class`, leaving a message. */
#define CHECK_ERR(call, class) \
    do { \
        int check_r_ = (call); \
        if (check_r_ != (class)) \
            check_failed(__FILE__, __LINE__, #call, "returned %d (%s), want %d (%s)", check_r_, \
                         cport_strerror(check_r_), (int)(class), cport_strerror(class)); \
        if (cport_last_error()[0] == '\0') \
            check_failed(__FILE__, __LINE__, #call, "failed with an empty cport_last_error()"); \
    } while (0)

static void watchdog_fired(int sig) {
    (void)sig;
    static const char msg[] = ": FAILED: the watchdog fired (a hang?)\n";
    ssize_t r = write(2, test_name, strlen(test_name));
    r = write(2, msg, sizeof msg - 1);
    (void)r;
    _exit(1);
}

/* Names the test for the messages and arms a watchdog of `seconds` (scaled by the environment
 * variable CPORT_TEST_SLOW, e.g. 20 under valgrind). */
static void test_start(const char *name, unsigned seconds) {
    test_name = name;
    const char *slow = getenv("CPORT_TEST_SLOW");
    if (slow && atoi(slow) > 1)
        seconds *= (unsigned)atoi(slow);
    signal(SIGALRM, watchdog_fired);
    alarm(seconds);
}

static void test_pass(void) {
    alarm(0);
    printf("%s: ok\n", test_name);
    fflush(stdout);
}

/* Takes the next completion, which must come within `timeout_ms`. */
#define NEXT(port, timeout_ms, c) CHECK_OK(cport_next_completion((port), (timeout_ms), (c)))

/* No completion is queued (a poll of `timeout_ms` finds none). */
#define CHECK_NO_COMPLETION(port, timeout_ms) \
    do { \
        cport_completion check_c_; \
        int check_r_ = cport_next_completion((port), (timeout_ms), &check_c_); \
        if (check_r_ != CPORT_ETIMEDOUT) \
            check_failed(__FILE__, __LINE__, "no completion", \
                         "cport_next_completion returned %d (%s): op %d status %d user %p", check_r_, \
                         cport_strerror(check_r_), check_r_ == CPORT_OK ? check_c_.op : 0, \
                         check_r_ == CPORT_OK ? check_c_.status : 0, \
                         check_r_ == CPORT_OK ? check_c_.user : NULL); \
    } while (0)

#endif /* CPORT_TEST_CHECK_H */
