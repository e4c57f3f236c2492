/*  test_router.c - runs the router actor's self test (actors/router.c); any argument
    makes it verbose.
*/
#include <stdbool.h>

#include "router.h"
#include "test_watchdog.h"

int
main (int argc, char *argv [])
{
    test_watchdog ();
    (void) argv;
    bool verbose = argc > 1;
    return router_test (verbose) == 0 ? 0 : 1;
}
