/*  test_presence.c - runs the presence actor's self test (actors/presence.c); any argument
    makes it verbose.
*/
#include <stdbool.h>

#include "presence.h"
#include "test_watchdog.h"

int
main (int argc, char *argv [])
{
    test_watchdog ();
    (void) argv;
    bool verbose = argc > 1;
    return presence_test (verbose) == 0 ? 0 : 1;
}
