package io.stickless.testapp;

import java.io.Serializable;

/** A class of the webapp's own, so that reading it back needs the webapp's class loader. */
public class CartItem implements Serializable {
    private static final long serialVersionUID = 1L;

    final String name;
    int quantity;

    public CartItem(String name, int quantity) {
        this.name = name;
        this.quantity = quantity;
    }

    @Override
    public String toString() {
        return name + " x" + quantity;
    }
}
