/*  test_watchdog.h - a deadline for a C self test.

    An actor test that deadlocks (a sibling that stops answering, a socket
    that never drains) would hang make check, and CI with it. SIGALRM's
    default action ends the test, which make check then reports as failed;
    the redis-server children die with it (PR_SET_PDEATHSIG). The deadline
    is generous enough for a run under valgrind (make memcheck).
*/
#ifndef RTWS_TEST_WATCHDOG_H_INCLUDED
#define RTWS_TEST_WATCHDOG_H_INCLUDED

#include <unistd.h>

#define TEST_WATCHDOG_S     900

static inline void
test_watchdog (void)
{
    alarm (TEST_WATCHDOG_S);
}

#endif
