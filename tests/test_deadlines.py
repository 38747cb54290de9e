"""Answer deadlines cut a connection whose server is silent, and never a socket it gave up."""

from __future__ import annotations

import socket
import time

from flask_uow._deadlines import TICK_SECONDS, AnswerDeadlines


class Driver:
    """A driver connection as the deadlines see one: a socket number, gone once closed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | None = sock

    def fileno(self) -> int:
        if self.sock is None:
            raise OSError("the connection is lost")
        return self.sock.fileno()

    def close(self) -> None:
        assert self.sock is not None
        self.sock.close()
        self.sock = None


def passed(deadlines: AnswerDeadlines) -> None:
    """Wait until the watcher has taken every passed deadline, and a little longer."""
    give_up = time.monotonic() + 5
    while deadlines.armed() and time.monotonic() < give_up:
        time.sleep(TICK_SECONDS)
    assert deadlines.armed() == 0
    time.sleep(3 * TICK_SECONDS)  # it hangs up right after it took the deadline


def test_a_connection_still_waiting_when_its_deadline_passes_is_hung_up() -> None:
    client, server = socket.socketpair()
    deadlines = AnswerDeadlines()
    deadlines.arm(Driver(client), 0.05)
    passed(deadlines)
    server.settimeout(5)
    assert server.recv(1) == b""  # the server's side sees the client hang up
    client.close()
    server.close()


def test_a_disarmed_connection_is_left_alone() -> None:
    client, server = socket.socketpair()
    deadlines = AnswerDeadlines()
    driver = Driver(client)
    deadlines.arm(driver, 0.05)
    deadlines.disarm(driver)
    time.sleep(0.05 + 3 * TICK_SECONDS)
    client.sendall(b"x")
    assert server.recv(1) == b"x"
    client.close()
    server.close()


def test_a_socket_that_reuses_the_number_of_a_connection_closed_while_armed_is_never_cut() -> None:
    client, server = socket.socketpair()
    number = client.fileno()
    deadlines = AnswerDeadlines()
    driver = Driver(client)
    deadlines.arm(driver, 0.1)
    driver.close()  # lost while armed: no disarm (SQLAlchemy invalidates such a connection)
    server.close()
    other, peer = socket.socketpair()  # another engine's connection, say
    assert number in (other.fileno(), peer.fileno())  # the lowest free number comes first
    passed(deadlines)
    other.sendall(b"x")
    peer.sendall(b"y")
    assert (peer.recv(1), other.recv(1)) == (b"x", b"y")
    other.close()
    peer.close()


def test_arming_a_connection_its_driver_has_lost_arms_nothing() -> None:
    client, server = socket.socketpair()
    driver = Driver(client)
    driver.close()
    server.close()
    deadlines = AnswerDeadlines()
    deadlines.arm(driver, 0.05)
    assert deadlines.armed() == 0
