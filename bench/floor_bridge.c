/* The cheapest bridge with sipbridge's I/O shape, for bench/bench_floor.py.
 *
 * Per call: one UDP socket (RTP from the caller) and one TCP connection (to the agent).
 * A datagram in is written to the TCP connection behind a 2-octet length; a frame from
 * the agent is sent to the caller's address with sendto. No RTP parsing, no codec, no
 * jitter buffer, no pacing: only the four socket operations per call and 20 ms frame
 * (recvfrom, send, recv, sendto) and the epoll_wait they share. What this process costs
 * per call is the floor any bridge with one RTP port and one agent connection per call
 * pays on this machine, whatever it is written in.
 *
 * Usage: floor_bridge CALLS FIRST_UDP_PORT AGENT_TCP_PORT
 * Prints "ready" once every socket is bound and every agent connection is up; runs until
 * its standard input closes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct call {
    int udp;
    int tcp;
    struct sockaddr_in caller;
    int have_caller;
    unsigned char in[8192];
    size_t in_len;
};

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: floor_bridge CALLS FIRST_UDP_PORT AGENT_TCP_PORT\n");
        return 2;
    }
    int calls = atoi(argv[1]), first = atoi(argv[2]), agent_port = atoi(argv[3]);
    struct call *table = calloc((size_t)calls, sizeof *table);
    int ep = epoll_create1(0);
    struct sockaddr_in addr = {.sin_family = AF_INET};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < calls; i++) {
        struct call *c = &table[i];
        c->udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        addr.sin_port = htons((uint16_t)(first + i));
        if (bind(c->udp, (struct sockaddr *)&addr, sizeof addr) != 0) {
            perror("bind");
            return 1;
        }
        c->tcp = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in agent = addr;
        agent.sin_port = htons((uint16_t)agent_port);
        if (connect(c->tcp, (struct sockaddr *)&agent, sizeof agent) != 0) {
            perror("connect");
            return 1;
        }
        int one = 1;
        setsockopt(c->tcp, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i << 1};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->udp, &ev);
        ev.data.u64 = ((uint64_t)i << 1) | 1;
        epoll_ctl(ep, EPOLL_CTL_ADD, c->tcp, &ev);
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    printf("ready\n");
    fflush(stdout);
    struct epoll_event events[256];
    unsigned char buf[2048];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0 && errno == EINTR)
            continue;
        for (int k = 0; k < n; k++) {
            uint64_t tag = events[k].data.u64;
            if (tag == UINT64_MAX)
                return 0; /* standard input closed (or readable): stop */
            struct call *c = &table[tag >> 1];
            if ((tag & 1) == 0) {
                socklen_t len = sizeof c->caller;
                ssize_t got = recvfrom(c->udp, buf + 2, sizeof buf - 2, 0,
                                       (struct sockaddr *)&c->caller, &len);
                if (got <= 0)
                    continue;
                c->have_caller = 1;
                buf[0] = (unsigned char)(got >> 8);
                buf[1] = (unsigned char)got;
                if (send(c->tcp, buf, (size_t)got + 2, MSG_DONTWAIT) < 0 && errno != EAGAIN)
                    return 1;
            } else {
                ssize_t got = recv(c->tcp, c->in + c->in_len, sizeof c->in - c->in_len, 0);
                if (got <= 0)
                    return got == 0 ? 0 : 1;
                c->in_len += (size_t)got;
                size_t at = 0;
                while (c->in_len - at >= 2) {
                    size_t size = ((size_t)c->in[at] << 8) | c->in[at + 1];
                    if (c->in_len - at - 2 < size)
                        break;
                    if (c->have_caller)
                        sendto(c->udp, c->in + at + 2, size, MSG_DONTWAIT,
                               (struct sockaddr *)&c->caller, sizeof c->caller);
                    at += 2 + size;
                }
                memmove(c->in, c->in + at, c->in_len - at);
                c->in_len -= at;
            }
        }
    }
}
