//  Runs the gateway actor's self test (actors/gateway.c).
#include "gateway.h"

int
main (int argc, char *argv [])
{
    bool verbose = argc > 1;
    return gateway_test (verbose) == 0 ? 0 : 1;
}
