/*  test_auth.c - runs the auth actor's self test (actors/auth.c). */
#include "auth.h"

int
main (int argc, char *argv [])
{
    bool verbose = argc > 1;
    return auth_test (verbose) == 0? 0: 1;
}
