//  Runs the gateway actor's self test (actors/gateway.c).
#include "gateway.h"
#include "test_watchdog.h"

int
main (int argc, char *argv [])
{
    test_watchdog ();
    bool verbose = argc > 1;
    return gateway_test (verbose) == 0 ? 0 : 1;
}
