/* The agent on a POSIX serial device: the line half of hal.h (write, clock, serial) over a
 * tty opened in raw mode with termios. The accelerator half comes from another file (the
 * Verilator HAL in the tests; a board's driver elsewhere).
 *
 *   fpgaprint-agent DEVICE [--baud B] [--serial S]
 *
 * Ends on SIGINT or SIGTERM. Exit 2 for bad arguments, 3 when the device cannot be used.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "../fpgaprint_agent.h"
#include "../hal.h"

static int fd = -1;
static char serial[65] = "C-AGENT";
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

void fpa_hal_write(const uint8_t *data, size_t n)
{
    while (n) {
        ssize_t k = write(fd, data, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct pollfd p = {fd, POLLOUT, 0};
                poll(&p, 1, 100);
                continue;
            }
            return; /* the line is gone: the answer is lost, as on a cut wire */
        }
        data += k;
        n -= (size_t)k;
    }
}

uint64_t fpa_hal_micros(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

const char *fpa_hal_serial(void) { return serial; }

static speed_t speed_of(long baud)
{
    static const struct { long baud; speed_t speed; } table[] = {
        {9600, B9600}, {19200, B19200}, {38400, B38400}, {57600, B57600},
        {115200, B115200}, {230400, B230400},
    };
    size_t i;
    for (i = 0; i < sizeof table / sizeof table[0]; ++i)
        if (table[i].baud == baud)
            return table[i].speed;
    return (speed_t)0;
}

static int raw_mode(speed_t speed)
{
    struct termios t;
    if (tcgetattr(fd, &t) != 0)
        return -1;
    t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    t.c_oflag &= ~(tcflag_t)OPOST;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB | CSTOPB);
    t.c_cflag |= CS8 | CLOCAL | CREAD;
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    if (cfsetispeed(&t, speed) != 0 || cfsetospeed(&t, speed) != 0)
        return -1;
    return tcsetattr(fd, TCSANOW, &t);
}

int main(int argc, char **argv)
{
    static uint8_t buf[4096];
    const char *device = NULL;
    long baud = 115200;
    int i;
    struct sigaction sa;
    for (i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--baud") && i + 1 < argc) {
            baud = strtol(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--serial") && i + 1 < argc) {
            ++i;
            if (strlen(argv[i]) >= sizeof serial) {
                fprintf(stderr, "error: --serial: at most %u characters\n",
                        (unsigned)sizeof serial - 1u);
                return 2;
            }
            strcpy(serial, argv[i]);
        } else if (argv[i][0] != '-' && !device) {
            device = argv[i];
        } else {
            fprintf(stderr, "usage: %s DEVICE [--baud B] [--serial S]\n", argv[0]);
            return 2;
        }
    }
    if (!device) {
        fprintf(stderr, "usage: %s DEVICE [--baud B] [--serial S]\n", argv[0]);
        return 2;
    }
    if (speed_of(baud) == (speed_t)0) {
        fprintf(stderr, "error: --baud %ld: supported rates are 9600 ... 230400\n", baud);
        return 2;
    }
    fd = open(device, O_RDWR | O_NOCTTY);
    if (fd < 0) {
        fprintf(stderr, "error: cannot open %s: %s\n", device, strerror(errno));
        return 3;
    }
    if (raw_mode(speed_of(baud)) != 0) {
        fprintf(stderr, "error: %s is not a serial device (termios: %s)\n", device,
                strerror(errno));
        return 3;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fpa_agent_start();
    fprintf(stderr, "serving %s on %s\n", serial, device);
    while (!stop) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t n;
        if (poll(&p, 1, 200) <= 0)
            continue;
        n = read(fd, buf, sizeof buf);
        if (n > 0)
            fpa_agent_feed(buf, (size_t)n);
        else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
            struct timespec pause = {0, 10000000L};
            nanosleep(&pause, NULL); /* no peer on the line yet */
        }
    }
    close(fd);
    return 0;
}
