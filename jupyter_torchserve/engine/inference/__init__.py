"""Inference calls without a transport: a request's items in, replies or a JSON answer out.
The HTTP front calls them; a gRPC servicer can, with Python objects instead of bodies."""
