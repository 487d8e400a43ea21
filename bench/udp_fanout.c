/* The kernel's part of a fan-out on loopback (bench/udp_fanout.py builds and runs this).
 *
 * One frame to 32 subscribers, a datagram each of SIZE bytes, FRAMES times, two ways alternating per round:
 *   each: a socket per subscriber (as each ICE connection has its own), one sendmmsg of one message on each;
 *   shared: one socket for all subscribers, one sendmmsg carrying all 32 messages (each with its own address).
 * The receiving sockets are drained every 50 frames; nobody waits on them (no wake-ups are measured).
 * Prints per round: "each <us per subscriber frame> shared <us per subscriber frame>".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define N 32

static double
now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void
drain(const int *rx)
{
    char buf[2048];
    for (int i = 0; i < N; i++)
        while (recv(rx[i], buf, sizeof buf, 0) > 0)
            ;
}

int
main(int argc, char **argv)
{
    int size = argc > 1 ? atoi(argv[1]) : 200, frames = argc > 2 ? atoi(argv[2]) : 20000;
    int rounds = argc > 3 ? atoi(argv[3]) : 5;
    if (size < 1 || size > 1400 || frames < 50 || rounds < 1)
        return 2;
    static char payload[1500];
    memset(payload, 1, sizeof payload);
    int rx[N], tx[N], shared = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in addr[N];
    struct mmsghdr messages[N];
    struct iovec vectors[N];
    for (int i = 0; i < N; i++) {
        rx[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int big = 1 << 24;
        setsockopt(rx[i], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        memset(&addr[i], 0, sizeof addr[i]);
        addr[i].sin_family = AF_INET;
        addr[i].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr[i];
        if (bind(rx[i], (struct sockaddr *)&addr[i], sizeof addr[i]) < 0
            || getsockname(rx[i], (struct sockaddr *)&addr[i], &len) < 0)
            return 1;
        tx[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        vectors[i].iov_base = payload;
        vectors[i].iov_len = (size_t)size;
        memset(&messages[i], 0, sizeof messages[i]);
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
        messages[i].msg_hdr.msg_name = &addr[i];
        messages[i].msg_hdr.msg_namelen = sizeof addr[i];
    }
    for (int round = 0; round < rounds; round++) {
        double t0 = now();
        for (int f = 0; f < frames; f++) {
            for (int i = 0; i < N; i++)
                sendmmsg(tx[i], &messages[i], 1, 0);
            if (f % 50 == 0)
                drain(rx);
        }
        double t1 = now();
        for (int f = 0; f < frames; f++) {
            sendmmsg(shared, messages, N, 0);
            if (f % 50 == 0)
                drain(rx);
        }
        double t2 = now();
        printf("each %.3f shared %.3f\n", (t1 - t0) / frames / N * 1e6, (t2 - t1) / frames / N * 1e6);
        fflush(stdout);
    }
    return 0;
}
