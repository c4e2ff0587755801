"""The sync tool's web app (mounted at ``/app`` by ``sync serve``): the seed's Hightouch steps in a browser."""
