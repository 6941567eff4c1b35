"""The embeddable web widget's side of the server: publishable keys (`pw_...`), the origins
they answer, visitor tokens and the routes a browser may call with them."""
