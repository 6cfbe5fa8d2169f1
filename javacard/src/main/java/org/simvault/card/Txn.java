package org.simvault.card;

import javacard.framework.JCSystem;

/**
 * Transactions sized to the commit buffer.
 *
 * <p>Costs are counted per persistent write as its bytes plus {@link #ENTRY_OVERHEAD}
 * (a conservative guess at a card's log record header); a multi-step update checks
 * {@link #fits} before each step and continues in a new transaction when the budget
 * is spent. The budget is the card's JCSystem.getMaxCommitCapacity(), or less when
 * the install parameters ask for less (tests use that to exercise the splitting).
 */
final class Txn {
    static final short ENTRY_OVERHEAD = 8;
    static final short MIN_BUDGET = 512;

    private final short budget;
    private short spent;

    Txn(short requested) {
        short max = JCSystem.getMaxCommitCapacity();
        short b = requested > 0 && requested < max ? requested : max;
        budget = b;
    }

    short budget() {
        return budget;
    }

    void begin() {
        JCSystem.beginTransaction();
        spent = 0;
    }

    /** Whether cost more bytes still fit in this transaction. */
    boolean fits(short cost) {
        return (short) (spent + cost) <= budget && (short) (spent + cost) > 0;
    }

    void charge(short cost) {
        spent += cost;
    }

    void commit() {
        JCSystem.commitTransaction();
    }

    /** Abort a transaction left open by an exception (nothing of it reaches EEPROM). */
    static void abortIfOpen() {
        if (JCSystem.getTransactionDepth() != 0) {
            JCSystem.abortTransaction();
        }
    }
}
