"""aiortc peers of the media server: the relay (SFU-like) and the recorder.

DESIGN §1/§5: 1:1 calls are browser-to-browser; these peers earn their cost with three or more
participants, when browser-to-browser fails, and while recording (with both consents).

Shape (docs/media-contract.md, "Relay and recording"):
- every participant publishes its audio + video on one "publish" RTCPeerConnection (client
  offers sendonly, the server answers), and subscribes to every other participant on one
  connection per source (client offers recvonly, the server answers with relayed tracks). One
  connection per direction and source means no renegotiation ever, which aiortc handles badly.
- video is forwarded as it arrives: each complete VP8 frame the publisher's receiver
  assembles goes to every subscriber's sender as is (no decode, no re-encode: a relayed
  stream costs a fraction of the codec's CPU, bench/README.md), and a subscriber's keyframe
  request goes on to the publisher. Nothing decodes video (the recorder muxes the same
  frames). Audio is forwarded the same way (Opus packets) and decoded only while recording,
  for the recorder's mix, which reads it through MediaRelay; so does everything on an aiortc
  whose receiver cannot be hooked (decoded, each subscriber encodes). A drain keeps every
  decoded published track consumed, so frames never pile up in aiortc's receive queue.
- the recorder takes the same forwarded video (from a key frame) and relayed audio; a change
  in who publishes closes the current file and opens a new one.

The socket.io handlers are registered by register_peer_events(), called once by the server
core, which also tells us when a socket leaves (forget) and when a room ends (end_room).

Modules: hub (RelayHub: the peers and the room's recording), forwarding (encoded frames to
subscribers and the recorder, behind a check of the aiortc internals it hooks), events (the
socket.io handlers), recorder (the file and its Recording row). This package's names are its
public face.
"""

from media_server.peers.events import PeerIdentity, register_peer_events
from media_server.peers.hub import PeerError, RelayHub

__all__ = ["PeerError", "PeerIdentity", "RelayHub", "register_peer_events"]
