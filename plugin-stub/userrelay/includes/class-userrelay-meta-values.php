<?php
/**
 * Meta values on the wire: how the values of one user meta key travel (docs/protocol.md).
 *
 * A key holding one value travels as that value; a key holding several travels as
 * {"userrelay:values": [first, second, ...]}, in order. Both ways: what a site sends (events,
 * the users route, digests) and what a delivery asks a site to store. Pure: no WordPress.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * The protocol's form of a meta key's values.
 */
final class UserRelay_Meta_Values {

	/**
	 * The one key of the object a meta key holding several values travels as:
	 * {"userrelay:values": [first, second, ...]} (docs/protocol.md). Any other value is the
	 * key's one value.
	 */
	const SEVERAL = 'userrelay:values';

	/**
	 * A meta key's value as the protocol carries it: its one value, or all of them in order
	 * as {"userrelay:values": [...]} when it holds several.
	 *
	 * @param array $values The key's values, unserialized (as get_user_meta() gives them).
	 * @return mixed
	 */
	public static function encode( array $values ) {
		$values = array_values( $values );
		return count( $values ) > 1 ? array( self::SEVERAL => $values ) : ( $values ? $values[0] : '' );
	}

	/**
	 * A delivered meta value as the list of values to store: several for
	 * {"userrelay:values": [...]}, else the one value; null when the object is malformed.
	 *
	 * @param mixed $value The delivered value.
	 * @return array|null
	 */
	public static function decode( $value ): ?array {
		if ( ! is_array( $value ) || ! array_key_exists( self::SEVERAL, $value ) ) {
			return array( $value );
		}
		$values = $value[ self::SEVERAL ];
		if ( 1 !== count( $value ) || ! is_array( $values ) || ! $values || array_keys( $values ) !== range( 0, count( $values ) - 1 ) ) {
			return null;
		}
		return $values;
	}
}
