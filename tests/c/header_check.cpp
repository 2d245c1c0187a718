// include/dmsc.h from C++ (compiled with -std=c++17 -Wall -Wextra -Werror -pedantic): the
// header parses, links and runs; the config initializer, enum values and struct sizes are
// what C callers rely on.
#include "dmsc.h"
#include "dmsc.h" // include guard

#include <cstdio>
#include <cstring>

static_assert(sizeof(dmscUniqueId) == DMSC_UNIQUE_ID_BYTES, "unique id size");
static_assert(DMSC_UNIQUE_ID_BYTES == 128, "NCCL_UNIQUE_ID_BYTES");
static_assert(dmscSuccess == 0 && dmscInvalidArgument == 4 && dmscInProgress == 7, "results");
static_assert(dmscFloat32 == 7 && dmscBfloat16 == 9 && dmscFloat == dmscFloat32, "types");
static_assert(dmscMax == 2 && dmscMin == 3 && dmscAvg == 4, "ops");
static_assert(DMSC_PATH_UP == 0 && DMSC_PATH_DOWN == 1 && DMSC_PATH_FAILURE_BYTES == 128, "paths");
static_assert(sizeof(void *) != 8 || sizeof(dmscPathMetrics_t) == 224, "dmscPathMetrics_t layout");
static_assert(DMSC_VERSION_CODE == DMSC_VERSION(DMSC_MAJOR, DMSC_MINOR, DMSC_PATCH), "version");

int main() {
    int version = 0;
    if (dmscGetVersion(&version) != dmscSuccess || version != DMSC_VERSION_CODE) {
        std::fprintf(stderr, "dmscGetVersion: %d\n", version);
        return 1;
    }
    dmscConfig_t config = DMSC_CONFIG_INITIALIZER;
    if (config.size != sizeof(dmscConfig_t) || config.magic != DMSC_CONFIG_MAGIC ||
        config.timeoutMs != DMSC_CONFIG_UNDEF_INT || config.algo != nullptr) {
        std::fprintf(stderr, "DMSC_CONFIG_INITIALIZER\n");
        return 1;
    }
    dmscComm_t comm = nullptr;
    if (dmscCommCount(comm, &version) != dmscInvalidArgument ||
        std::strstr(dmscGetLastError(nullptr), "dmscCommCount: comm is NULL") == nullptr) {
        std::fprintf(stderr, "dmscCommCount(NULL): %s\n", dmscGetLastError(nullptr));
        return 1;
    }
    std::printf("C++ header check: version %d, %s\n", version, dmscGetErrorString(dmscTimeout));
    return 0;
}
