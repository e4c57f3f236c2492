/*  test_auth.c - runs the auth actor's self test (actors/auth.c). */
#include "auth.h"
#include "test_watchdog.h"

int
main (int argc, char *argv [])
{
    test_watchdog ();
    bool verbose = argc > 1;
    return auth_test (verbose) == 0? 0: 1;
}
