"""An HTTP server that answers every GET with the client address it sees, one line.

Usage: echo_http.py ADDRESS PORT   (ADDRESS IPv4 or IPv6)   (the exit-peer scenarios run it on their "internet" host)
"""
import http.server
import socket
import sys


class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (self.client_address[0] + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.client_address[0], fmt % args))


class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET


Server((sys.argv[1], int(sys.argv[2])), Echo).serve_forever()
