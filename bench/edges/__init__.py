"""Benchmark several edge routers with FRR: LAN -> core -> 2 edges -> 4 ISPs, in namespaces.

In the scale-out lab (ecmpd.lab.edges: real FRR 8.4 on the core and the edges, ecmpd on
the edges with `announce`, on the core with `gateway: bgp` uplinks), the same run
measures, each against its anchor:

- an edge's ISPs all fail (gray), with ecmpd on the core (default and tuned checks) and
  with BGP alone at the core (the edge's announce withdrawn by ecmpd there,
  hash-threshold multipath at the core), the LAN's traffic in both families
  (lab.edgetraffic): the longest pause of a ping stream that went through the failed
  edge; its busy TCP connections (NATed) back via the other edge; the busy and idle
  connections and the streams through the other edge broken, stalled or paused by the
  failure or by the edge's return; the core's BGP sessions dropped meanwhile;
- announce -> the core's FIB (drain / undrain of an edge's uplinks, both families);
- an edge that forwards nothing but stays up: ecmpd on the core vs BGP/BFD alone;
- an edge dying behind a switch (link and FRR killed) with BFD 100 ms x 3.

    python -m bench.edges [--quick] [--runs N] [--prefix P]

Prints one JSON document on stdout, progress on stderr.
"""
