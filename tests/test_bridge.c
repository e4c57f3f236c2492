/*  test_bridge.c - runs the bridge actor's self test (actors/bridge.c); any argument
    makes it verbose.
*/
#include <stdbool.h>

#include "bridge.h"
#include "test_watchdog.h"

int
main (int argc, char *argv [])
{
    test_watchdog ();
    (void) argv;
    bool verbose = argc > 1;
    return bridge_test (verbose) == 0 ? 0 : 1;
}
