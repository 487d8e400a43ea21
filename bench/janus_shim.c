/* LD_PRELOAD shim for the forwarding benchmark: Janus sees only 127.0.0.1.
 *
 * Janus 1.1 skips interfaces flagged IFF_LOOPBACK before it reads ice_enforce_list, so a loopback-only
 * Janus gathers no candidates at all. This getifaddrs() returns the real list with every entry but
 * lo's IPv4 address blanked (ifa_addr = NULL: Janus skips it) and IFF_LOOPBACK cleared on that one,
 * so its only host candidate is 127.0.0.1. The list is edited in place, so freeifaddrs() is glibc's.
 * Built by bench/janus.py at bench time: gcc -shared -fPIC -o janus_shim.so janus_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <arpa/inet.h>

int getifaddrs(struct ifaddrs **ifap) {
    static int (*real)(struct ifaddrs **) = NULL;
    if (real == NULL)
        real = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
    int rc = real(ifap);
    if (rc != 0)
        return rc;
    for (struct ifaddrs *ifa = *ifap; ifa != NULL; ifa = ifa->ifa_next) {
        int keep = ifa->ifa_addr != NULL && ifa->ifa_addr->sa_family == AF_INET &&
                   ((struct sockaddr_in *)ifa->ifa_addr)->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
        if (keep)
            ifa->ifa_flags &= ~IFF_LOOPBACK;
        else
            ifa->ifa_addr = NULL;
    }
    return 0;
}
