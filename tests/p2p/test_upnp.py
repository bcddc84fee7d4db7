"""UPnP port mapping against a local gateway that speaks SSDP and IGD SOAP on loopback.

There is no home router here, so the gateway is a small UDP + HTTP server implementing the two
protocol exchanges; the code under test (discovery, description parsing, SOAP calls, the node's
NAT fallback order) is the real one.
"""

import dataclasses
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.crypto.keys import PrivateKey
from app.node.p2p import upnp
from app.node.p2p.node import P2PNode

from .helpers import FAST, run, swarm

SERVICE = "urn:schemas-upnp-org:service:WANIPConnection:1"
DESCRIPTION = f"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><device><serviceList><service>
<serviceType>{SERVICE}</serviceType><controlURL>/ctl/IPConn</controlURL>
</service></serviceList></device></root>"""


class Gateway:
    def __init__(self, external_ip: str = "127.0.0.1") -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._send(DESCRIPTION.encode())

            def do_POST(self):
                action = self.headers["SOAPAction"].strip('"').split("#")[1]
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                gateway.calls.append((action, dict(re.findall(r"<(New\w+)>([^<]*)</New\w+>", body))))
                extra = f"<NewExternalIPAddress>{external_ip}</NewExternalIPAddress>" \
                    if action == "GetExternalIPAddress" else ""
                self._send(f'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
                           f'<s:Body><u:{action}Response xmlns:u="{SERVICE}">{extra}</u:{action}Response>'
                           f'</s:Body></s:Envelope>'.encode())

            def _send(self, data: bytes):
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.ssdp = f"127.0.0.1:{self.udp.getsockname()[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        threading.Thread(target=self._answer_ssdp, daemon=True).start()

    def _answer_ssdp(self):
        while True:
            try:
                data, peer = self.udp.recvfrom(4096)
            except OSError:
                return
            if b"M-SEARCH" in data and b"InternetGatewayDevice" in data:
                location = f"http://127.0.0.1:{self.http.server_address[1]}/rootDesc.xml"
                self.udp.sendto(f"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nLOCATION: {location}\r\n\r\n".encode(), peer)

    def close(self):
        self.http.shutdown()
        self.http.server_close()
        self.udp.close()


@pytest.fixture
def gateway():
    gw = Gateway()
    yield gw
    gw.close()


def test_map_port_adds_a_mapping_and_reads_the_external_address(gateway):
    mapping = run(upnp.map_port(45678, timeout=2, ssdp=gateway.ssdp))
    assert mapping.address == "127.0.0.1:45678"
    action, args = gateway.calls[0]
    assert action == "AddPortMapping"
    assert args["NewInternalPort"] == "45678" and args["NewProtocol"] == "TCP"
    assert args["NewInternalClient"] == "127.0.0.1" and args["NewLeaseDuration"] == str(upnp.LEASE_S)
    run(upnp.unmap_port(mapping))
    assert gateway.calls[-1][0] == "DeletePortMapping"


def test_no_gateway_raises_upnp_unavailable():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        with pytest.raises(upnp.UpnpUnavailable):
            run(upnp.map_port(1234, timeout=0.3, ssdp=f"127.0.0.1:{silent.getsockname()[1]}"))


def test_unreachable_node_uses_upnp_before_a_relay_and_removes_the_mapping_on_stop(gateway):
    config = dataclasses.replace(FAST, use_upnp=True, upnp_ssdp=gateway.ssdp)

    async def scenario():
        async with swarm(2) as (tracker, _):
            node = P2PNode(PrivateKey.generate(), trackers=[tracker.address], config=config,
                           advertise="127.0.0.1:1")  # what it first believes: not dialable
            await node.start()
            try:
                assert node.tracker_client.reachable
                assert node.record().address == f"127.0.0.1:{node.port}" and node.record().relay == ""
            finally:
                await node.stop()
            assert [c[0] for c in gateway.calls] == ["AddPortMapping", "GetExternalIPAddress", "DeletePortMapping"]

    run(scenario())
