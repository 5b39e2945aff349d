/*
 * loadgen: the load client of echosrv's benchmark (bench/run.ts builds it with cc). One process, one thread,
 * non-blocking sockets and epoll: it does per round trip exactly the syscalls an echo server does (one send, one
 * receive), so one loadgen keeps one server process busy; it reports its own CPU time over wall time so a reader
 * can tell when the client, not the server, was the limit.
 *
 *   loadgen bulk     PORT SECONDS            one connection: write a verified pattern while reading it back
 *   loadgen pingpong PORT SECONDS CONNS      CONNS connections, each with one 64-byte message in flight
 *   loadgen connect  PORT SECONDS PARALLEL   PARALLEL at a time: connect, echo 64 bytes, close
 *   loadgen idle     PORT CONNS [SETTLE]     open CONNS connections, echo 64 bytes on each, wait SETTLE seconds
 *                                            (default 1), print a line, hold them until standard input closes
 *
 * Every mode first runs WARMUP seconds unmeasured, then SECONDS measured, and prints one JSON object on standard
 * output. Every byte that comes back is compared with what was sent; a mismatch or an early end of stream makes
 * "ok" false with an "error" string. Environment: LOADGEN_HOST (default 127.0.0.1), LOADGEN_WARMUP (default 0.5),
 * LOADGEN_SERVER_PID (the server's process: its CPU time over the measured window, and in idle mode its resident
 * memory before the first connection and after the last, are read from /proc and reported).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MESSAGE 64
#define HIST_US 200000 /* latency histogram: 1 us buckets up to 200 ms, then one overflow bucket */
#define PATTERN (1 << 20)
#define BULK_WRITE (64 * 1024)
#define BULK_READ (256 * 1024)
#define SOURCE_ADDRESSES 16 /* connect mode spreads over 127.0.0.1..16 so ports in TIME_WAIT do not run out */

static const char *host = "127.0.0.1";
static int port;
static double warmup = 0.5;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/*
 * The server's CPU time (user + system, all threads) from /proc, when LOADGEN_SERVER_PID names it; else -1. Its
 * system part (the kernel working for it: system calls and, on loopback, part of the TCP work of both ends) goes
 * to *system, so a reader can tell the kernel's share of an echo from the server program's own.
 */
static int server_pid;

static double server_cpu_seconds(double *system) {
  *system = -1;
  if (server_pid <= 0) return -1;
  char path[64], text[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", server_pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = 0;
  char *p = strrchr(text, ')');
  unsigned long utime = 0, stime = 0;
  /* after ") ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime */
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2) return -1;
  *system = (double)stime / (double)sysconf(_SC_CLK_TCK);
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* The server's resident memory in KiB (VmRSS), or -1. */
static long server_rss_kib(void) {
  if (server_pid <= 0) return -1;
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", server_pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kib = -1;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
  }
  fclose(f);
  return kib;
}

/* Busy and total CPU time of the whole machine (all cores) from /proc/stat, in clock ticks. */
static void machine_ticks(double *busy, double *total) {
  *busy = *total = -1;
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return;
  unsigned long long v[8] = {0};
  int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                   &v[7]);
  fclose(f);
  if (got < 5) return;
  double all = 0;
  for (int i = 0; i < 8; i++) all += (double)v[i];
  *total = all;
  *busy = all - (double)v[3] - (double)v[4]; /* minus idle and iowait */
}

static double cpu_seconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec * 1e-6 + (double)u.ru_stime.tv_sec +
         (double)u.ru_stime.tv_usec * 1e-6;
}

/* Prints {"ok":false,...} and exits: the orchestrator reports the run as failed with this reason. */
static void fail(const char *mode, const char *format, ...) {
  char reason[256];
  va_list args;
  va_start(args, format);
  vsnprintf(reason, sizeof reason, format, args);
  va_end(args);
  printf("{\"mode\":\"%s\",\"ok\":false,\"error\":\"%s\"}\n", mode, reason);
  fflush(stdout);
  exit(1);
}

static struct sockaddr_in server_address(void) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) fail("setup", "bad host %s", host);
  return a;
}

static void raise_fd_limit(void) {
  struct rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

static void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* A blocking connect, then non-blocking from there on. */
static int connect_to_server(const char *mode) {
  struct sockaddr_in a = server_address();
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(mode, "socket: %s", strerror(errno));
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) fail(mode, "connect: %s", strerror(errno));
  set_nodelay(fd);
  return fd;
}

static void set_nonblocking(int fd) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* ---- latency histogram ---- */

static uint32_t *histogram;
static uint64_t histogram_count;

static void record_latency(double seconds) {
  long us = (long)(seconds * 1e6);
  if (us < 0) us = 0;
  if (us > HIST_US) us = HIST_US;
  histogram[us]++;
  histogram_count++;
}

static long percentile_us(double p) {
  uint64_t rank = (uint64_t)(p * (double)histogram_count);
  if (rank >= histogram_count && histogram_count > 0) rank = histogram_count - 1;
  uint64_t seen = 0;
  for (long us = 0; us <= HIST_US; us++) {
    seen += histogram[us];
    if (seen > rank) return us;
  }
  return HIST_US;
}

/* ---- the measured window: warmup, then SECONDS measured, with the client's own CPU use ---- */

struct window {
  double start, end, cpu_start, cpu_end, server_start, server_end, server_system_start, server_system_end;
  double machine_busy_start, machine_total_start, machine_busy_end, machine_total_end;
  int measuring, done;
};

static void window_tick(struct window *w, double t, double seconds) {
  if (!w->measuring && t >= w->start) {
    w->measuring = 1;
    w->start = t;
    w->cpu_start = cpu_seconds();
    w->server_start = server_cpu_seconds(&w->server_system_start);
    machine_ticks(&w->machine_busy_start, &w->machine_total_start);
    w->end = t + seconds;
  } else if (w->measuring && t >= w->end) {
    w->done = 1;
    w->end = t;
    w->cpu_end = cpu_seconds();
    w->server_end = server_cpu_seconds(&w->server_system_end);
    machine_ticks(&w->machine_busy_end, &w->machine_total_end);
  }
}

static double window_busy(const struct window *w) {
  return (w->cpu_end - w->cpu_start) / (w->end - w->start);
}

/*
 * How many cores the whole machine kept busy in the window (client, server and anything else running), or -1: with
 * client_busy and server_busy it tells how much other work shared the machine during the measurement.
 */
static double window_machine_busy(const struct window *w) {
  double total = w->machine_total_end - w->machine_total_start;
  if (w->machine_total_start < 0 || w->machine_total_end < 0 || total <= 0) return -1;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  return (w->machine_busy_end - w->machine_busy_start) / total * (double)cores;
}

/* The server's CPU time over wall time in the window, or -1 when unknown. */
static double window_server_busy(const struct window *w) {
  if (w->server_start < 0 || w->server_end < 0) return -1;
  return (w->server_end - w->server_start) / (w->end - w->start);
}

/* The system (kernel) part of window_server_busy, or -1 when unknown. */
static double window_server_system(const struct window *w) {
  if (w->server_system_start < 0 || w->server_system_end < 0) return -1;
  return (w->server_system_end - w->server_system_start) / (w->end - w->start);
}

/* ---- bulk: one connection, write the pattern while reading it back ---- */

static unsigned char pattern[PATTERN + BULK_READ + BULK_WRITE];

static void fill_pattern(void) {
  uint32_t x = 2463534242u;
  for (size_t i = 0; i < PATTERN; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    pattern[i] = (unsigned char)x;
  }
  /* The tail repeats the head, so any window of the stream is contiguous in memory. */
  memcpy(pattern + PATTERN, pattern, BULK_READ + BULK_WRITE);
}

static void run_bulk(double seconds) {
  static unsigned char in[BULK_READ];
  fill_pattern();
  int fd = connect_to_server("bulk");
  set_nonblocking(fd);
  uint64_t sent = 0, received = 0, measured = 0;
  int write_open = 1;
  struct window w = {.start = now() + warmup};
  struct pollfd p = {.fd = fd};
  for (;;) {
    p.events = POLLIN | (write_open ? POLLOUT : 0);
    if (poll(&p, 1, 5000) == 0) fail("bulk", "no progress for 5 s (sent %llu, received %llu)",
                                     (unsigned long long)sent, (unsigned long long)received);
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = recv(fd, in, sizeof in, MSG_DONTWAIT);
      if (n == 0) break;
      if (n < 0 && errno != EAGAIN) fail("bulk", "recv: %s", strerror(errno));
      if (n > 0) {
        if (received + (uint64_t)n > sent) fail("bulk", "received more than was sent");
        if (memcmp(in, pattern + received % PATTERN, (size_t)n) != 0) {
          fail("bulk", "echoed bytes differ near offset %llu", (unsigned long long)received);
        }
        received += (uint64_t)n;
        if (w.measuring && !w.done) measured += (uint64_t)n;
      }
    }
    if (write_open && (p.revents & POLLOUT)) {
      ssize_t n = send(fd, pattern + sent % PATTERN, BULK_WRITE, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN) fail("bulk", "send: %s", strerror(errno));
      if (n > 0) sent += (uint64_t)n;
    }
    if (!w.done) {
      window_tick(&w, now(), seconds);
      if (w.done) {
        shutdown(fd, SHUT_WR); /* then read the rest: every byte sent must come back */
        write_open = 0;
      }
    }
  }
  if (received != sent) {
    fail("bulk", "end of stream after %llu of %llu bytes", (unsigned long long)received, (unsigned long long)sent);
  }
  close(fd);
  double span = w.end - w.start;
  printf("{\"mode\":\"bulk\",\"ok\":true,\"seconds\":%.3f,\"bytes\":%llu,\"verified_bytes\":%llu,"
         "\"bytes_per_s\":%.0f,\"client_busy\":%.3f,\"server_busy\":%.3f,\"server_system\":%.3f,"
         "\"machine_busy\":%.3f}\n",
         span, (unsigned long long)measured, (unsigned long long)received, (double)measured / span, window_busy(&w),
         window_server_busy(&w), window_server_system(&w), window_machine_busy(&w));
}

/* ---- ping-pong: CONNS connections, one 64-byte message in flight on each ---- */

struct peer {
  int fd;
  uint32_t got;
  uint64_t seq;
  double sent_at;
  unsigned char out[MESSAGE];
  unsigned char in[MESSAGE];
};

static void make_message(struct peer *c, uint32_t index) {
  memcpy(c->out, &c->seq, sizeof c->seq);
  memcpy(c->out + 8, &index, sizeof index);
  memset(c->out + 12, (int)(c->seq * 131u + index), MESSAGE - 12);
}

static void send_message(struct peer *c, uint32_t index, double t, const char *mode) {
  make_message(c, index);
  c->got = 0;
  c->sent_at = t;
  ssize_t n = send(c->fd, c->out, MESSAGE, MSG_DONTWAIT | MSG_NOSIGNAL);
  /* 64 bytes into an empty socket buffer are taken whole or not at all. */
  if (n != MESSAGE) fail(mode, "send returned %zd: %s", n, n < 0 ? strerror(errno) : "short write");
}

static void run_pingpong(double seconds, int conns) {
  histogram = calloc(HIST_US + 1, sizeof *histogram);
  struct peer *peers = calloc((size_t)conns, sizeof *peers);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; i < conns; i++) {
    peers[i].fd = connect_to_server("pingpong");
    set_nonblocking(peers[i].fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, peers[i].fd, &ev);
  }
  struct window w = {.start = now() + warmup};
  double t = now();
  for (int i = 0; i < conns; i++) send_message(&peers[i], (uint32_t)i, t, "pingpong");
  uint64_t trips = 0;
  struct epoll_event events[256];
  while (!w.done) {
    int ready = epoll_wait(ep, events, 256, 5000);
    if (ready == 0) fail("pingpong", "no reply for 5 s");
    t = now();
    for (int e = 0; e < ready; e++) {
      uint32_t i = events[e].data.u32;
      struct peer *c = &peers[i];
      ssize_t n = recv(c->fd, c->in + c->got, MESSAGE - c->got, MSG_DONTWAIT);
      if (n == 0) fail("pingpong", "the server closed a connection");
      if (n < 0) {
        if (errno == EAGAIN) continue;
        fail("pingpong", "recv: %s", strerror(errno));
      }
      c->got += (uint32_t)n;
      if (c->got < MESSAGE) continue;
      if (memcmp(c->in, c->out, MESSAGE) != 0) fail("pingpong", "echoed message differs");
      if (w.measuring) {
        record_latency(t - c->sent_at);
        trips++;
      }
      c->seq++;
      send_message(c, i, t, "pingpong");
    }
    window_tick(&w, t, seconds);
  }
  for (int i = 0; i < conns; i++) close(peers[i].fd);
  double span = w.end - w.start;
  printf("{\"mode\":\"pingpong\",\"ok\":true,\"conns\":%d,\"seconds\":%.3f,\"round_trips\":%llu,"
         "\"round_trips_per_s\":%.0f,\"p50_us\":%ld,\"p99_us\":%ld,\"client_busy\":%.3f,\"server_busy\":%.3f,\"server_system\":%.3f,"
         "\"machine_busy\":%.3f}\n",
         conns, span, (unsigned long long)trips, (double)trips / span, percentile_us(0.50), percentile_us(0.99),
         window_busy(&w), window_server_busy(&w), window_server_system(&w), window_machine_busy(&w));
}

/* ---- connect: PARALLEL at a time, connect, echo 64 bytes, close ---- */

struct attempt {
  int fd;
  uint32_t got;
  int connected;
  double started;
  unsigned char in[MESSAGE];
};

static unsigned char hello[MESSAGE];
static uint32_t next_source;

static void start_attempt(struct attempt *a, uint32_t slot, int ep, double t) {
  struct sockaddr_in to = server_address();
  struct sockaddr_in from = {.sin_family = AF_INET};
  from.sin_addr.s_addr = htonl(0x7f000001u + (next_source++ % SOURCE_ADDRESSES));
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("connect", "socket: %s", strerror(errno));
  int one = 1;
  /* Pick the source port at connect() time, from the whole 4-tuple space, not at bind() time. */
  setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&from, sizeof from) < 0) fail("connect", "bind: %s", strerror(errno));
  set_nodelay(fd);
  if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0 && errno != EINPROGRESS) {
    fail("connect", "connect: %s", strerror(errno));
  }
  a->fd = fd;
  a->got = 0;
  a->connected = 0;
  a->started = t;
  struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = slot};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static void run_connect(double seconds, int parallel) {
  histogram = calloc(HIST_US + 1, sizeof *histogram);
  memset(hello, 'h', sizeof hello);
  struct attempt *slots = calloc((size_t)parallel, sizeof *slots);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct window w = {.start = now() + warmup};
  double t = now();
  for (int i = 0; i < parallel; i++) start_attempt(&slots[i], (uint32_t)i, ep, t);
  uint64_t done = 0;
  struct epoll_event events[256];
  while (!w.done) {
    int ready = epoll_wait(ep, events, 256, 5000);
    if (ready == 0) fail("connect", "no progress for 5 s");
    t = now();
    for (int e = 0; e < ready; e++) {
      uint32_t i = events[e].data.u32;
      struct attempt *a = &slots[i];
      if (!a->connected) {
        int error = 0;
        socklen_t len = sizeof error;
        getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &error, &len);
        if (error) fail("connect", "connect: %s", strerror(error));
        if (send(a->fd, hello, MESSAGE, MSG_NOSIGNAL) != MESSAGE) fail("connect", "send: %s", strerror(errno));
        a->connected = 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_MOD, a->fd, &ev);
        continue;
      }
      ssize_t n = recv(a->fd, a->in + a->got, MESSAGE - a->got, MSG_DONTWAIT);
      if (n == 0) fail("connect", "the server closed before echoing");
      if (n < 0) {
        if (errno == EAGAIN) continue;
        fail("connect", "recv: %s", strerror(errno));
      }
      a->got += (uint32_t)n;
      if (a->got < MESSAGE) continue;
      if (memcmp(a->in, hello, MESSAGE) != 0) fail("connect", "echoed message differs");
      close(a->fd); /* also leaves the epoll set */
      if (w.measuring) {
        record_latency(t - a->started);
        done++;
      }
      start_attempt(a, i, ep, t);
    }
    window_tick(&w, t, seconds);
  }
  for (int i = 0; i < parallel; i++) close(slots[i].fd);
  double span = w.end - w.start;
  printf("{\"mode\":\"connect\",\"ok\":true,\"parallel\":%d,\"seconds\":%.3f,\"connections\":%llu,"
         "\"connections_per_s\":%.0f,\"p50_us\":%ld,\"p99_us\":%ld,\"client_busy\":%.3f,\"server_busy\":%.3f,\"server_system\":%.3f,"
         "\"machine_busy\":%.3f}\n",
         parallel, span, (unsigned long long)done, (double)done / span, percentile_us(0.50), percentile_us(0.99),
         window_busy(&w), window_server_busy(&w), window_server_system(&w), window_machine_busy(&w));
}

/* ---- idle: CONNS connections that each echoed once, held open until standard input closes ---- */

static void run_idle(int conns, double settle) {
  raise_fd_limit();
  long before = server_rss_kib();
  memset(hello, 'i', sizeof hello);
  int *fds = calloc((size_t)conns, sizeof *fds);
  struct timeval timeout = {.tv_sec = 10};
  for (int i = 0; i < conns; i++) {
    int fd = connect_to_server("idle");
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    if (send(fd, hello, MESSAGE, MSG_NOSIGNAL) != MESSAGE) fail("idle", "send: %s", strerror(errno));
    unsigned char in[MESSAGE];
    size_t got = 0;
    while (got < MESSAGE) {
      ssize_t n = recv(fd, in + got, MESSAGE - got, 0);
      if (n <= 0) fail("idle", "connection %d: no echo (%s)", i, n == 0 ? "closed" : strerror(errno));
      got += (size_t)n;
    }
    if (memcmp(in, hello, MESSAGE) != 0) fail("idle", "echoed message differs");
    fds[i] = fd;
  }
  /* Let the server finish what the last connections started (and its allocator settle) before looking. */
  struct timespec pause = {.tv_sec = (time_t)settle, .tv_nsec = (long)((settle - (double)(time_t)settle) * 1e9)};
  nanosleep(&pause, NULL);
  long after = server_rss_kib();
  printf("{\"mode\":\"idle\",\"ok\":true,\"conns\":%d,\"rss_before_kib\":%ld,\"rss_after_kib\":%ld,"
         "\"kib_per_conn\":%.3f}\n",
         conns, before, after, before < 0 || after < 0 ? -1.0 : (double)(after - before) / conns);
  fflush(stdout);
  char line[64];
  while (read(0, line, sizeof line) > 0) {
  }
  /* Every connection must still be open: a server that dropped idle ones would look cheaper than it is. */
  int closed = 0;
  for (int i = 0; i < conns; i++) {
    unsigned char b;
    if (recv(fds[i], &b, 1, MSG_DONTWAIT) == 0) closed++;
    close(fds[i]);
  }
  if (closed) fprintf(stderr, "loadgen idle: the server closed %d of %d connections\n", closed, conns);
  exit(closed ? 1 : 0);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (getenv("LOADGEN_HOST")) host = getenv("LOADGEN_HOST");
  if (getenv("LOADGEN_WARMUP")) warmup = atof(getenv("LOADGEN_WARMUP"));
  if (getenv("LOADGEN_SERVER_PID")) server_pid = atoi(getenv("LOADGEN_SERVER_PID"));
  if (argc < 4) {
    fprintf(stderr, "usage: loadgen bulk|pingpong|connect PORT SECONDS [CONNS|PARALLEL] | loadgen idle PORT CONNS\n");
    return 2;
  }
  const char *mode = argv[1];
  port = atoi(argv[2]);
  setvbuf(stdout, NULL, _IOLBF, 0);
  raise_fd_limit();
  if (strcmp(mode, "bulk") == 0) {
    run_bulk(atof(argv[3]));
  } else if (strcmp(mode, "pingpong") == 0 && argc > 4) {
    run_pingpong(atof(argv[3]), atoi(argv[4]));
  } else if (strcmp(mode, "connect") == 0 && argc > 4) {
    run_connect(atof(argv[3]), atoi(argv[4]));
  } else if (strcmp(mode, "idle") == 0) {
    run_idle(atoi(argv[3]), argc > 4 ? atof(argv[4]) : 1.0);
  } else {
    fprintf(stderr, "loadgen: unknown mode %s\n", mode);
    return 2;
  }
  return 0;
}
