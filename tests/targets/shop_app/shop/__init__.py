"""The shop package (base release). shop.cart is the module the example patches replace."""
